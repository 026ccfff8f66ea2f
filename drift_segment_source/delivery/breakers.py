"""Circuit breakers, one per destination: outages cost no attempts, and end fast.

A destination is a Segment host and write key, or the Drift API of one org. After
FAILURES_TO_OPEN retryable failures in a row it opens: its rows are not attempted (they go
back to the store, parked, with no attempt spent) until a probe is due. One probe at a time
(per delivery loop) tests recovery; when it succeeds the breaker closes and the loop makes
every row parked for that destination due at once, instead of each waiting for its own
backoff. Open breakers are written to the store (with the wall-clock time they opened), so
``/readyz``, ``/status`` and ``/metrics`` of every process show them. Probes and their
intervals run on the monotonic clock: a step of the host clock neither hastens nor delays
them.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from drift_segment_source.clock import SYSTEM_CLOCK, Clock

FAILURES_TO_OPEN = 3
# How long an open breaker waits before letting one probe through (and again after each
# failed probe): short, because a probe costs one batch and recovery should show at once.
PROBE_SECONDS = 2.0
# The longest circuit key: what the store keeps of it (Store.set_breaker).
KEY_LENGTH = 55
# A probe a host does not answer holds its round for the whole timeout, and the rows of
# every other destination claimed after it wait for the next round: each probe that hangs
# again doubles the wait before the next, up to this.
HUNG_PROBE_MAX_SECONDS = 60.0
# How long rows wait behind an open circuit, but one per round, which waits for the next probe
# and becomes it. Recovery makes every row behind the destination due at once, so the others
# need not come back every probe interval: a backlog of 100,000 rows claimed, translated and
# parked again every 2 s kept a core busy and delayed every other destination's rows.
PARK_SECONDS = HUNG_PROBE_MAX_SECONDS
# One probe at a time, even one that outlasts PROBE_SECONDS; a probe that never reported
# (its row went back untried) stops counting as in flight after this.
PROBE_FLIGHT_LIMIT_SECONDS = 120.0


def segment_key(host: str, write_key: str) -> str:
    """The breaker of one Segment source (the write key only as a short hash), at most
    KEY_LENGTH characters: a long host (a proxy with a path) keeps its start and a hash of
    the whole, so two sources behind one long host never share a circuit."""
    digest = hashlib.sha256(write_key.encode()).hexdigest()[:12]
    key = f"segment:{host}:{digest}"
    if len(key) <= KEY_LENGTH:
        return key
    host_digest = hashlib.sha256(host.encode()).hexdigest()[:8]
    keep = KEY_LENGTH - len(f"segment:~{host_digest}:{digest}")
    return f"segment:{host[:keep]}~{host_digest}:{digest}"


def drift_key(org_id: int) -> str:
    """The breaker of one org's Drift API access."""
    return f"drift:{org_id}"


@dataclass
class Breaker:
    """One destination's state: consecutive failures, and when a probe is next allowed."""

    failures: int = 0
    probe_at: float | None = None  # None: closed (monotonic seconds)
    hung_probes: int = 0  # probes in a row that got no answer within the timeout
    probing_since: float | None = None  # a probe in flight (it may outlast PROBE_SECONDS)
    orgs: set[int] = field(default_factory=set)  # whose rows are parked behind it
    called_at: float = float("-inf")  # when a success last called the rows parked behind it


class Breakers:
    """This delivery loop's breakers. Thread-safe: Drift lookups report from their threads.

    ``on_change(key, opened_at)`` records a breaker opening (a wall-clock time, to show) or
    closing (None).
    """

    def __init__(self, on_change: Callable[[str, float | None], None],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._breakers: dict[str, Breaker] = {}
        # Destinations whose stored record this loop has cleared or written itself: another
        # loop (before a restart, or another worker) may have left one open in the store.
        self._known: set[str] = set()
        self._recovered: list[tuple[str, set[int]]] = []
        self._lock = threading.Lock()
        self._on_change = on_change
        self._clock = clock

    def allows(self, key: str, orgs: set[int]) -> bool:
        """Whether to attempt the destination now: closed, or open with a probe due (this
        caller is then the probe; the next waits PROBE_SECONDS)."""
        with self._lock:
            breaker = self._breakers.setdefault(key, Breaker())
            if breaker.probe_at is None:
                return True
            breaker.orgs |= orgs
            now = self._clock.monotonic()
            in_flight = (breaker.probing_since is not None
                         and now - breaker.probing_since < PROBE_FLIGHT_LIMIT_SECONDS)
            if in_flight or now < breaker.probe_at:
                return False
            breaker.probe_at = now + PROBE_SECONDS
            breaker.probing_since = now
            return True

    def probe_due(self, key: str) -> bool:
        """Whether ``allows`` would let a probe through now (without granting it)."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or breaker.probe_at is None:
                return True
            now = self._clock.monotonic()
            in_flight = (breaker.probing_since is not None
                         and now - breaker.probing_since < PROBE_FLIGHT_LIMIT_SECONDS)
            return not in_flight and now >= breaker.probe_at

    def not_probed(self, key: str) -> None:
        """The probe ``allows`` granted was not made (the round ran out of time)."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None and breaker.probe_at is not None:
                breaker.probing_since = None
                breaker.probe_at = self._clock.monotonic()

    def probe_in(self, key: str) -> float:
        """Seconds until the destination's next probe (0 when closed); while a probe is in
        flight, at least PROBE_SECONDS (rows parked meanwhile would otherwise be due at once,
        and be claimed and parked again and again while a hung probe waits)."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or breaker.probe_at is None:
                return 0.0
            wait = breaker.probe_at - self._clock.monotonic()
            if breaker.probing_since is not None:
                wait = max(wait, PROBE_SECONDS)
            return max(0.0, wait)

    def park_seconds(self, key: str, keep_for_probe: bool) -> float:
        """How long a row waits behind the destination's open circuit: until the next probe
        for the one kept for it, at least PARK_SECONDS for the others."""
        wait = self.probe_in(key)
        return wait if keep_for_probe else max(wait, PARK_SECONDS)

    def succeeded(self, key: str, after_parked: bool = False) -> None:
        """The destination answered: close its breaker, and remember its parked rows.
        ``after_parked``: the answer was for rows parked behind its circuit, maybe by another
        loop (which keeps the others parked until a recovery calls them): they are called
        too, at most once a probe interval."""
        with self._lock:
            breaker = self._breakers.setdefault(key, Breaker())
            breaker.failures = breaker.hung_probes = 0
            breaker.probing_since = None
            if breaker.probe_at is None:
                now = self._clock.monotonic()
                call = after_parked and now - breaker.called_at >= PROBE_SECONDS
                if key in self._known and not call:
                    return
                # Once per destination, and after rows parked by another loop: clear what
                # that loop may have left open, and make due the rows it left waiting (its
                # circuit's recovery was never this loop's to see).
                if call:
                    breaker.called_at = now
                self._known.add(key)
                self._recovered.append((key, set()))
            else:
                breaker.probe_at = None
                self._recovered.append((key, breaker.orgs))
                breaker.orgs = set()
        self._on_change(key, None)

    def failed(self, key: str, orgs: set[int], hung: bool = False) -> bool:
        """The destination did not answer (network, 429, 5xx); True when it is open now.
        ``hung``: it gave no answer within the timeout. That opens the breaker at once:
        every further try would hold its round (and other destinations' rows marked in it)
        for the whole timeout, and a probe in PROBE_SECONDS costs one row."""
        with self._lock:
            breaker = self._breakers.setdefault(key, Breaker())
            breaker.failures = max(breaker.failures + 1, FAILURES_TO_OPEN if hung else 0)
            breaker.orgs |= orgs
            breaker.probing_since = None
            if breaker.probe_at is not None:  # the probe failed
                breaker.hung_probes = breaker.hung_probes + 1 if hung else 0
                breaker.probe_at = self._clock.monotonic() + min(
                    PROBE_SECONDS * 2 ** breaker.hung_probes, HUNG_PROBE_MAX_SECONDS)
                return True
            if breaker.failures < FAILURES_TO_OPEN:
                return False
            breaker.probe_at = self._clock.monotonic() + PROBE_SECONDS
            self._known.add(key)
        self._on_change(key, self._clock.wall())
        return True

    def is_open(self, key: str) -> bool:
        """Whether the destination's breaker is open."""
        with self._lock:
            breaker = self._breakers.get(key)
            return breaker is not None and breaker.probe_at is not None

    def recovered(self) -> list[tuple[str, set[int]]]:
        """Destinations closed since the last call, with the orgs whose rows waited."""
        with self._lock:
            found, self._recovered = self._recovered, []
        return found
