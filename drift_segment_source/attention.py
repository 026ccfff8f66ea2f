"""What needs a person, read from the store: the one source every health surface shows.

The landing page, ``/readyz``, ``/status`` and ``doctor`` all read ``read_attention`` and so
tell the same story: rows held and what to do about each reason, destinations whose circuit
is open (host and since when), dead letters, quarantined payloads, and webhooks refused for
a wrong or missing token in the last hour. A surface is green only when ``warnings`` is empty.

Circuits are recorded by whichever delivery loop opened them; one recorded for a destination
that is no longer configured (SEGMENT_HOST fixed, a write key replaced, an org removed) is not
shown, and ``forget_stale_circuits`` deletes it when the delivery side starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from . import config
from .app_mode.org_routing import AppRouting
from .app_mode.orgs import ACTIVE
from .app_mode.secrets_box import SecretUnreadable
from .delivery.breakers import segment_key
from .routing import NEEDS_REINSTALL, NO_DRIFT_TOKEN, NO_WRITE_KEY, Routing
from .store import tallies
from .store.refusals import SEGMENT_STALE, Refusals, refused
from .store.store import Store

log = logging.getLogger("drift_segment_source.attention")

# A backlog whose oldest row has waited this long needs a look even with no circuit open.
STALLED_SECONDS = 15 * 60
ORGS_HINT = "`drift-segment-source orgs list` names the organisations"


def fix_for_held(reason: str, settings: Mapping[str, Any]) -> str:
    """What a person does so rows held for ``reason`` are delivered."""
    if reason == NO_DRIFT_TOKEN:
        return ("set DRIFT_ACCESS_TOKEN to a Drift API token that can read conversations and "
                "restart; they are delivered then")
    if reason == NO_WRITE_KEY:
        if config.app_mode(settings):
            return ("their organisation's admin finishes the install by saving a Segment "
                    f"write key ({ORGS_HINT})")
        if settings.get("SEGMENT_WRITE_KEY"):
            return ("a process on the same store runs without SEGMENT_WRITE_KEY (a dry run "
                    "still running, or a worker started without the key?): give it the key or "
                    "stop it; a delivery loop with the key releases them within 10 s")
        return "set SEGMENT_WRITE_KEY and restart; they are delivered then"
    if reason == NEEDS_REINSTALL:
        return ("Drift refused their organisation's token: an admin of the organisation "
                f"installs the app again ({ORGS_HINT})")
    return "see `drift-segment-source orgs list` and the service's log"


def for_people(seconds: float) -> str:
    """A duration as a person reads it: 45 s, 12 min, 3 h 5 min, 2 days."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(int(seconds // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400:.0f} days"


def plural(number: int, one: str, many: str | None = None) -> str:
    """``1 webhook``, ``3 webhooks``."""
    return f"{number} {one if number == 1 else (many or one + 's')}"


def shown_host(url: str) -> str:
    """A destination URL fit for any page: scheme, host and port, never a user or password."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return url.rsplit("@", 1)[-1]
    port = f":{parts.port}" if parts.port else ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True)
class HeldRows:
    """Rows held for one reason, and what to do about it."""

    reason: str
    count: int
    fix: str


@dataclass(frozen=True)
class OpenCircuit:
    """A configured destination whose circuit is open."""

    destination: str  # the key the delivery loop recorded it under
    kind: str  # "segment" or "drift_api"
    host: str
    org_id: int | None
    since: float  # epoch seconds
    open_seconds: float


@dataclass(frozen=True)
class Attention:
    """Everything that may need a person, as plain facts."""

    backlog: int
    oldest_pending_age_seconds: float | None
    retrying: int
    held: tuple[HeldRows, ...]
    circuits: tuple[OpenCircuit, ...]
    dead_letters: int
    quarantined: int
    refused: dict[str, int] = field(default_factory=dict)  # last hour, by reason
    app_mode: bool = False
    dry_run: bool = False

    @property
    def held_count(self) -> int:
        """Rows held, whatever the reason."""
        return sum(held.count for held in self.held)

    def circuits_of(self, kind: str) -> list[OpenCircuit]:
        """The open circuits of one kind of destination."""
        return [circuit for circuit in self.circuits if circuit.kind == kind]

    def warnings(self) -> list[str]:
        """One plain sentence per thing that needs a person; empty when all is well.
        No org id appears: anyone may read the landing page and ``/readyz``."""
        found = [f"{plural(held.count, 'webhook')} held ({held.reason}): {held.fix}."
                 for held in self.held]
        if self.dry_run:
            found.append("Dry run: SEGMENT_WRITE_KEY is unset, so messages are built and "
                         "logged but nothing is sent to Segment: set it to send them.")
        found += self._circuit_warnings()
        if self.dead_letters:
            found.append(f"{plural(self.dead_letters, 'webhook')} in the dead letters: see "
                         "`drift-segment-source deadletters list`, fix the cause, then "
                         "`deadletters retry`.")
        if self.quarantined:
            found.append(f"{plural(self.quarantined, 'payload')} quarantined (data that failed "
                         "its schema): see `drift-segment-source quarantine list`; `quarantine "
                         "retry` after a fix, or `quarantine purge` what nobody will fix.")
        for reason, number in sorted(self.refused.items()):
            found.append(f"{refused(number, reason)} in the last hour: {refusal_fix(reason)}.")
        stalled = self.oldest_pending_age_seconds
        if stalled is not None and stalled > STALLED_SECONDS and not self.circuits:
            cause = ("their attempts fail: see Recent failures on /status" if self.retrying
                     else "check that a delivery loop runs (DELIVERY_IN_WEB=true, or a "
                          "`drift-segment-source worker` process)")
            found.append(f"{plural(self.backlog, 'webhook')} waiting, the oldest for "
                         f"{for_people(stalled)}: {cause}.")
        return found

    def _circuit_warnings(self) -> list[str]:
        """A sentence per Segment host down, and one for the Drift API."""
        found = []
        by_host: dict[str, list[OpenCircuit]] = {}
        for circuit in self.circuits_of("segment"):
            by_host.setdefault(circuit.host, []).append(circuit)
        for host, circuits in sorted(by_host.items()):
            longest = max(circuit.open_seconds for circuit in circuits)
            sources = f" for {plural(len(circuits), 'Segment source')}" if self.app_mode else ""
            found.append(f"Segment at {host} is not answering{sources} (circuit open for "
                         f"{for_people(longest)}): delivery waits and resumes within seconds "
                         "once it answers; check SEGMENT_HOST and the network path to it.")
        drift = self.circuits_of("drift_api")
        if drift:
            longest = max(circuit.open_seconds for circuit in drift)
            orgs = f" for {plural(len(drift), 'organisation')}" if self.app_mode else ""
            found.append(f"The Drift API at {drift[0].host} is not answering{orgs} (circuit "
                         f"open for {for_people(longest)}): events that need a lookup wait; "
                         "check DRIFT_API_URL and the network path to it.")
        return found

    def counts(self) -> dict[str, Any]:
        """The figures, never an id: for ``/readyz``, which answers anyone."""
        return {
            "backlog": self.backlog,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "retrying": self.retrying,
            "held": self.held_count,
            "held_by_reason": {held.reason: held.count for held in self.held},
            "open_circuits": {"segment": len(self.circuits_of("segment")),
                              "drift_api": len(self.circuits_of("drift_api"))},
            "dead_letters": self.dead_letters,
            "quarantined": self.quarantined,
            "refused_last_hour": sum(self.refused.values()),
            "refused_by_reason": dict(sorted(self.refused.items())),
        }

    def details(self) -> dict[str, Any]:
        """The figures with each held reason's fix and each circuit: for ``/status``."""
        return {
            **self.counts(),
            "held": [{"reason": held.reason, "count": held.count, "fix": held.fix}
                     for held in self.held],
            "open_circuits": [{"destination": circuit.destination, "kind": circuit.kind,
                               "host": circuit.host, "org_id": circuit.org_id,
                               "since": circuit.since,
                               "open_seconds": round(circuit.open_seconds, 1)}
                              for circuit in self.circuits],
        }


def refusal_fix(reason: str) -> str:
    """What to check when webhooks are refused for ``reason``."""
    if reason == SEGMENT_STALE:
        return ("Segment sent batches signed over their first element only whose receivedAt "
                "is far from this host's clock: check the clock (NTP), or turn Actions "
                "batching off (SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS bounds the age)")
    if reason.startswith("drift_"):
        return ("if Drift rotated its verification token, set DRIFT_VERIFICATION_TOKEN to the "
                "new one (old and new, comma-separated, during the change)")
    return ("set SEGMENT_SHARED_SECRET to the Shared Secret of Segment's Webhooks destination "
            "(app mode: each organisation's setup page shows its own)")


class Destinations:
    """The destinations configured now, to tell a recorded circuit that still matters from
    one left by a configuration that changed. App mode reads (and decrypts) the installed
    orgs only when a circuit needs telling apart."""

    def __init__(self, routing: Routing, settings: Mapping[str, Any]) -> None:
        self.routing = routing
        self.settings = settings
        self._segment: dict[str, str] | None = None  # stored key → host
        self._orgs: set[int] | None = None

    def describe(self, key: str) -> tuple[str, str, int | None] | None:
        """(kind, host, org id) of a recorded circuit's destination; None when it is no
        longer configured."""
        drift_api = self.settings["DRIFT_API_URL"]
        if key.startswith("drift:"):
            try:
                org_id = int(key.removeprefix("drift:"))
            except ValueError:
                return None
            if isinstance(self.routing, AppRouting):
                if org_id not in self.installed_orgs():
                    return None
            elif not self.settings.get("DRIFT_ACCESS_TOKEN"):
                return None  # no token: the Drift API is not called at all
            return "drift_api", shown_host(drift_api), org_id
        host = self.segment_hosts().get(key)
        return None if host is None else ("segment", shown_host(host), None)

    def segment_hosts(self) -> dict[str, str]:
        """The stored key of every configured Segment destination, with its host."""
        if self._segment is None:
            self._segment = {}
            for host, write_key in self._segment_destinations():
                self._segment[segment_key(host, write_key)] = host
        return self._segment

    def _segment_destinations(self) -> list[tuple[str, str]]:
        """(host, write key) of every destination messages go to now."""
        if not isinstance(self.routing, AppRouting):
            write_key = self.settings.get("SEGMENT_WRITE_KEY")
            return [(self.settings["SEGMENT_HOST"], write_key)] if write_key else []
        directory = self.routing.directory
        found = []
        for org in directory.all():
            if org.status != ACTIVE or not org.has_write_key:
                continue
            try:
                secrets = directory.secrets(org.org_id)
            except SecretUnreadable:
                continue
            if secrets is not None and secrets.write_key:
                found.append((secrets.segment_host or directory.hosts["us"], secrets.write_key))
        return found

    def installed_orgs(self) -> set[int]:
        """App mode: the orgs installed now."""
        if self._orgs is None:
            assert isinstance(self.routing, AppRouting)
            self._orgs = {org.org_id for org in self.routing.directory.all()}
        return self._orgs


def open_circuits(store: Store, destinations: Destinations, now: float) -> list[OpenCircuit]:
    """The open circuits of destinations configured now, the longest open first."""
    found = []
    for key, since in store.open_breakers().items():
        described = destinations.describe(key)
        if described is None:
            continue
        kind, host, org_id = described
        found.append(OpenCircuit(key, kind, host, org_id, since, max(0.0, now - since)))
    return sorted(found, key=lambda circuit: (circuit.since, circuit.destination))


def read_attention(store: Store, routing: Routing, settings: Mapping[str, Any],
                   refusals: Refusals | None, now: float | None = None) -> Attention:
    """What needs a person now (raises what the store raises when it cannot be read)."""
    now = time.time() if now is None else now
    waiting, oldest = store.backlog()
    held = tuple(HeldRows(reason, number, fix_for_held(reason, settings))
                 for reason, number in sorted(store.held_by_reason().items()))
    return Attention(
        backlog=waiting,
        oldest_pending_age_seconds=None if oldest is None else round(max(0.0, now - oldest), 1),
        retrying=tallies.retrying(store.engine),
        held=held,
        circuits=tuple(open_circuits(store, Destinations(routing, settings), now)),
        dead_letters=tallies.dead_letters(store.engine),
        quarantined=tallies.quarantined(store.engine),
        refused=refusals.last_hour() if refusals is not None else {},
        app_mode=config.app_mode(settings),
        dry_run=config.dry_run(settings),
    )


def attention_of(app: Flask) -> Attention:
    """``read_attention`` for an app built by ``create_app``."""
    return read_attention(app.extensions["store"], app.extensions["routing"], app.config,
                          app.extensions.get("refusals"), now=app.extensions["clock"].wall())


def forget_stale_circuits(app: Flask) -> int:
    """Delete the recorded circuits of destinations no longer configured (a fixed
    SEGMENT_HOST, a replaced write key, a removed org); how many. Run when the delivery side
    starts: a circuit only its old configuration could close would otherwise stay open."""
    store: Store = app.extensions["store"]
    try:
        destinations = Destinations(app.extensions["routing"], app.config)
        stale = [key for key in store.open_breakers() if destinations.describe(key) is None]
        for key in stale:
            store.set_breaker(key, None)
    except Exception as error:  # delivery starts anyway; the surfaces skip them meanwhile
        log.warning("could not forget the circuits of old destinations",
                    extra={"error": type(error).__name__})
        return 0
    if stale:
        log.info("forgot %d circuit(s) of destinations no longer configured", len(stale))
    return len(stale)

