"""Drift API lookups run beside the delivery round, never in its way.

A round asks for the conversations (and, with identity stitching, contacts) its rows need
and waits for them only briefly (``DELIVERY_LOOKUP_WAIT_SECONDS``): rows that need no lookup
are sent meanwhile, and a row whose lookup still runs goes back to the store (wait reason
``lookup``) without spending an attempt. The lookup carries on in one of at most MAX_RUNNING
threads of its own; when it ends, the loop makes the waiting row due and hands it the
outcome when it is claimed again. Segment → Drift writes run the same way (to_drift.py).

Every lookup reports to its org's Drift API circuit breaker; while the circuit is open, no
lookup is made but the probe, and the rows that need one are parked behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_for_futures
from typing import Any

from cachetools import TTLCache

from drift_segment_source.clock import Clock
from drift_segment_source.deadlines import call_within
from drift_segment_source.drift_api import DriftApi, DriftApiError, Missing, TokenRejected
from drift_segment_source.routing import NO_DRIFT_TOKEN, Held, Routing
from drift_segment_source.store.store import Failure, StoredWebhook

from .breakers import Breakers, drift_key
from .outcomes import Outcomes, Parked
from .rows import BUSY, WAIT, Busy, Known, Waiting, done

log = logging.getLogger("drift_segment_source.delivery")

DRIFT_PARKED = "waiting for the Drift API: it is not answering (circuit open)"

# Lookups running at once per delivery loop: enough for a burst of distinct conversations,
# few enough to stay well inside Drift's rate limit. Others queue, up to MAX_QUEUED.
MAX_RUNNING = 8
MAX_QUEUED = 10_000
# A queued lookup may start this long after its limit (and still end inside its row's wait of
# two limits and twice this: see Delivery's Recorder).
START_GRACE_SECONDS = 1.0


class NotStarted(Exception):
    """A queued lookup whose turn came too late to end inside its row's wait: never made."""


class Lookups:
    """Runs each distinct lookup once at a time, in at most MAX_RUNNING daemon threads.

    A lookup that has not started within ``limit_seconds`` (and START_GRACE_SECONDS) of being
    queued is not made: its row was handed back to wait two limits at most (see
    DriftLookups.finish), and a call made later could still run when another loop takes the
    row (a write made twice).
    """

    def __init__(self, max_running: int = MAX_RUNNING,
                 on_done: Callable[[], None] = lambda: None,
                 limit_seconds: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._futures: dict[tuple[Any, ...], Future[Any]] = {}
        self._queue: deque[tuple[tuple[Any, ...], Callable[[], Any], Future[Any], float]] = \
            deque()
        self._monotonic = monotonic
        self._threads = 0
        self._max_running = max_running
        self._lock = threading.Lock()
        self._on_done = on_done
        # A Drift API answering a byte at a time outlives every read timeout: past this,
        # the lookup fails (the row is retried) and its slot serves the next one.
        self._limit = limit_seconds

    def start(self, key: tuple[Any, ...], call: Callable[[], Any]) -> Future[Any] | None:
        """The future of ``call`` (shared by rows asking for the same ``key`` until it
        ends), or None when the queue is full."""
        with self._lock:
            known = self._futures.get(key)
            if known is not None:
                return known
            if len(self._queue) >= MAX_QUEUED:
                return None
            future: Future[Any] = Future()
            self._futures[key] = future
            self._queue.append((key, call, future,
                                self._monotonic() + self._limit + START_GRACE_SECONDS))
            if self._threads >= self._max_running:
                return future
            self._threads += 1
        # Daemon threads: a lookup hanging on a slow Drift API never holds up shutdown.
        threading.Thread(target=self._work, name="drift-lookup", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._threads -= 1
                    return
                key, call, future, start_by = self._queue.popleft()
            try:
                if self._monotonic() > start_by:
                    raise NotStarted(f"queued over {self._limit:g} s")
                result = call_within(self._limit, call)
            except BaseException as error:  # the row that waits decides what it means
                future.set_exception(error)
            else:
                future.set_result(result)
            finally:
                with self._lock:
                    self._futures.pop(key, None)
                self._on_done()

    def pending(self, key: tuple[Any, ...]) -> bool:
        """Whether a lookup of ``key`` is queued or in flight (``start`` would share it)."""
        with self._lock:
            return key in self._futures

    def running(self) -> int:
        """How many lookups are queued or in flight (tests, metrics)."""
        with self._lock:
            return len(self._futures)


# Re-prepares a row whose lookup ended (the same function that prepared it first).
Prepare = Callable[[StoredWebhook, Outcomes, list[Waiting], Known], None]


class DriftLookups:
    """One delivery loop's Drift API calls: started by rows, shared, reported to breakers."""

    def __init__(self, drift_api: DriftApi, routing: Routing, breakers: Breakers, clock: Clock,
                 wait_seconds: float, limit_seconds: float,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self.drift_api = drift_api
        self.routing = routing
        self.breakers = breakers
        self.clock = clock
        self.wait_seconds = wait_seconds
        self.pool = Lookups(on_done=on_done, limit_seconds=limit_seconds,
                            monotonic=clock.monotonic)
        # Rows sent back while a lookup ran: made due again once it has ended, then given
        # the lookups they waited for when claimed (forgotten if another loop claims them).
        self._awaiting: dict[int, Future[Any]] = {}
        self._known_of_row: TTLCache[int, Known] = TTLCache(100_000, 600)

    def known_for(self, row_id: int) -> Known:
        """The lookups a re-claimed row waited for (empty for most rows)."""
        if not self._known_of_row:  # most rows never waited: no expiry pass over the cache
            return {}
        return self._known_of_row.pop(row_id, None) or {}

    def ended(self) -> list[int]:
        """Rows sent back to wait for a lookup that has ended since the last call."""
        found = [row_id for row_id, lookup in self._awaiting.items() if lookup.done()]
        for row_id in found:
            del self._awaiting[row_id]
        return found

    def conversation(self, row: StoredWebhook, conversation_id: int | str,
                     known: Known) -> Future[Any] | Busy:
        """The lookup of the Conversation the row needs (done at once when cached)."""
        org_id = row.org_id
        cached = self.drift_api.cached_conversation(org_id, conversation_id)
        if cached is not None:
            return done(cached)
        credentials = self.routing.drift_credentials(org_id)
        if credentials is None:
            raise Held(NO_DRIFT_TOKEN, f"needs GET /conversations/{conversation_id}: "
                                       "set DRIFT_ACCESS_TOKEN")
        return self.start(("conversation", org_id, str(conversation_id)), known,
                          lambda: self.drift_api.conversation(org_id, conversation_id,
                                                              credentials), org_id)

    def contact(self, row: StoredWebhook, contact_id: str,
                known: Known) -> Future[Any] | Busy | None:
        """The lookup of the contact's externalId and email, or None without a Drift token
        (then only what the webhook itself says counts)."""
        org_id = row.org_id
        cached = self.drift_api.cached_contact(org_id, contact_id)
        if not isinstance(cached, Missing):
            return done(cached)
        credentials = self.routing.drift_credentials(org_id)
        if credentials is None:
            return None
        return self.start(("contact", org_id, contact_id), known,
                          lambda: self.drift_api.contact(org_id, contact_id, credentials),
                          org_id)

    def start(self, key: tuple[Any, ...], known: Known, call: Callable[[], Any],
              org_id: int) -> Future[Any] | Busy:
        """The row's earlier lookup of ``key`` if it has one, else a new (or shared) one;
        Parked while the org's Drift API circuit is open (unless this one is the probe)."""
        if key in known:
            earlier = known[key]
            if not (earlier.done() and isinstance(earlier.exception(), NotStarted)):
                return earlier
            del known[key]  # never made: make it now
        breaker = drift_key(org_id)
        if not self.breakers.allows(breaker, {org_id}):
            raise Parked(DRIFT_PARKED, breaker, self.breakers.probe_in(breaker))
        probe = self.breakers.is_open(breaker)
        shared = self.pool.pending(key)
        lookup = self.pool.start(key, lambda: self.reporting(breaker, org_id, call, probe))
        if probe and (lookup is None or shared):
            # Not made by this call (queue full, or the row shares a lookup queued before
            # the circuit opened, which will not be made): the next row may probe at once.
            self.breakers.not_probed(breaker)
        if lookup is None:
            return BUSY
        known[key] = lookup
        return lookup

    def reporting(self, breaker: str, org_id: int, call: Callable[[], Any],
                  probe: bool = False) -> Any:
        """Run a lookup and tell the org's breaker whether the Drift API answered. A lookup
        queued before the breaker opened is not made once it is open: each would wait out
        the timeout while lookups of other orgs (and Drift writes) queue behind it."""
        if not probe and self.breakers.is_open(breaker):
            raise Parked(DRIFT_PARKED, breaker, self.breakers.probe_in(breaker))
        try:
            result = call()
        except TokenRejected as error:
            if error.renewable:
                self.breakers.failed(breaker, {org_id})
                raise
            # Self-hosted: no outage to wait out, a token to replace. Its rows are held with
            # the reason (released at start with a token), not parked until the age limit.
            self.breakers.succeeded(breaker)
            log.warning("Drift rejected DRIFT_ACCESS_TOKEN (401): rows that need the Drift "
                        "API are held until a valid token is set", extra={"org_id": org_id})
            raise Held(NO_DRIFT_TOKEN, "Drift rejected DRIFT_ACCESS_TOKEN (401): set a valid "
                                       "token and restart") from None
        except DriftApiError as error:
            if error.retryable:
                self.breakers.failed(breaker, {org_id})
            else:
                self.breakers.succeeded(breaker)  # a 404 is an answer
            raise
        except Held:
            self.breakers.not_probed(breaker)  # the org lacks something: no answer either way
            raise
        except Exception:
            self.breakers.failed(breaker, {org_id})
            raise
        self.breakers.succeeded(breaker)
        return result

    def outcome(self, row: StoredWebhook, lookup: Future[Any] | Busy, known: Known,
                outcomes: Outcomes, waiting: list[Waiting]) -> Any:
        """The lookup's result (raising its error), or WAIT when the row must wait for it
        (filed as waiting, or deferred when the lookup queue is full)."""
        if isinstance(lookup, Busy):
            outcomes.deferred.append(Failure(row.id, "too many Drift API lookups queued"))
            return WAIT
        if not lookup.done():
            waiting.append(Waiting(row, lookup, known))
            return WAIT
        error = lookup.exception()
        if error is None:
            return lookup.result()
        if isinstance(error, Parked):
            raise error
        breaker = drift_key(row.org_id)
        if self.breakers.is_open(breaker) and not (
                isinstance(error, Held) or (isinstance(error, DriftApiError)
                                            and not error.retryable)):
            # The org's Drift API is down: the row waits for the next probe, no attempt spent.
            raise Parked(DRIFT_PARKED, breaker, self.breakers.probe_in(breaker))
        if isinstance(error, DriftApiError | Held):
            raise error
        # A hung or garbled answer, a refresh that raised: the Drift API's trouble, not
        # the row's, so the row is retried, never dead-lettered as untranslatable.
        raise DriftApiError(None, f"lookup failed: {error!r}"[:300], retryable=True)

    def finish(self, waiting: list[Waiting], outcomes: Outcomes, prepare: Prepare) -> None:
        """Wait briefly for the round's lookups, preparing each row again as its lookup ends
        (it may need a second one); rows whose lookup still runs go back to the store.

        A healthy Drift answers within the wait, and no row, nor the next round, waits longer
        behind a slow one.
        """
        until = self.clock.monotonic() + self.wait_seconds
        while waiting:
            wait_for_futures([item.lookup for item in waiting],
                             timeout=max(0.0, until - self.clock.monotonic()),
                             return_when=FIRST_COMPLETED)
            ended = [item for item in waiting if item.lookup.done()]
            if not ended:
                break
            waiting = [item for item in waiting if not item.lookup.done()]
            for item in ended:
                prepare(item.row, outcomes, waiting, item.known)
        for item in waiting:
            self._awaiting[item.row.id] = item.lookup
            self._known_of_row[item.row.id] = item.known
            outcomes.awaiting_lookup.append(Failure(item.row.id, "waiting for a Drift API lookup"))
