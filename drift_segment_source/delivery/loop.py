"""The delivery loop: claim stored webhooks, translate, post to Segment, record the outcome.

At-least-once: a row is marked delivered only after Segment's 2xx for all its messages;
anything unconfirmed goes back to the store (retry with backoff, hold, or dead letter).
Deterministic messageIds let Segment drop the copies a retry may cause.

Failure stays with its row (SPEC §5.8): whatever one row raises is filed under that row
alone; Drift API lookups run beside the round (``lookups.py``), so rows that need none are
never held up by them; and a round stops starting work at a deadline well inside its lease.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from drift_segment_source import metrics
from drift_segment_source.deadlines import TookTooLong, call_within
from drift_segment_source.destinations.drift import DriftWrites, NotYet
from drift_segment_source.destinations.segment import (
    MessageBuilder,
    MessageTooLarge,
    SegmentError,
    Transport,
    batches,
)
from drift_segment_source.drift_api import DriftApi, DriftApiError, Missing, TokenRejected
from drift_segment_source.routing import NO_DRIFT_TOKEN, Destination, Held, Routing
from drift_segment_source.sources.drift.translators import (
    TRANSLATORS,
    NoContact,
    SegmentCall,
    translate,
)
from drift_segment_source.sources.drift.translators.base import receipt_ms
from drift_segment_source.sources.segment.translators import (
    EVENT_TYPE_PREFIX as SEGMENT_EVENT_PREFIX,
)
from drift_segment_source.sources.segment.translators import translate as drift_actions
from drift_segment_source.store.store import Failure, Store, StoredWebhook

from .breakers import PARKED_REASONS, Breakers, drift_key, segment_key
from .lookups import Lookups
from .stitching import Stitching, facts_of_contact, merged

log = logging.getLogger("drift_segment_source.delivery")

SQLITE_LEASE = "delivery"
PRUNE_EVERY_SECONDS = 600
# A round starts no new post after this share of its lease, so that even a post that
# then takes its whole timeout ends before the lease does (no other loop takes the rows).
ROUND_SHARE_OF_LEASE = 1 / 3
# No post outlives this share of the lease, whatever Segment does (a wall-clock limit:
# requests' timeout bounds each read, and an answer can trickle in a byte at a time).
POSTS_END_BY_SHARE_OF_LEASE = 0.8
# When a row that was not tried this round is due again.
DEFER_SECONDS = 0.5
# How often the loop copies SQLite's write-ahead log into the database (Store.checkpoint).
CHECKPOINT_EVERY_SECONDS = 1.0
# Segment destinations (app mode: each org's host and write key) posted at once in a round,
# so one that does not answer holds up the others for none of its timeouts.
DESTINATIONS_AT_ONCE = 4


class NotTried(Exception):
    """A message the round had no time (or leave) to post: its row goes back untried."""


class Parked(Exception):
    """The row's destination has an open circuit: it waits ``seconds`` for the probe."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


# Allocations between two young-generation collections (CPython's default: 700). A delivery
# round allocates a few dozen dicts and lists per row, nearly all freed by reference counting,
# yet the default threshold ran a collection every few rows: 7% of delivery's CPU.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collect garbage less often, and never scan what start-up created (modules, settings):
    it lives as long as the process."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def new_owner() -> str:
    """A name for this delivery loop, unique across processes and hosts."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Outcomes:
    """What happened to each claimed row in one round."""

    delivered: list[int] = field(default_factory=list)
    dry_run: list[int] = field(default_factory=list)
    dead: list[Failure] = field(default_factory=list)
    retry: list[Failure] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    held: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))
    # Rows not tried this round (the round ran out of time, the loop is stopping, no
    # room was left in the lookup queue): back to the store, due again soon, without
    # spending an attempt.
    deferred: list[Failure] = field(default_factory=list)
    # Rows whose lookup still runs: made due when it ends (see Lookups), or after the
    # longest a lookup can take should this process be gone by then.
    awaiting_lookup: list[Failure] = field(default_factory=list)
    # Keys of the linking identifies Segment confirmed (identity stitching).
    links_sent: list[bytes] = field(default_factory=list)
    # Rows whose destination's circuit is open: back untried until its next probe.
    parked: list[Failure] = field(default_factory=list)

    def file(self, row: StoredWebhook, error: Exception) -> None:
        """File a row under what ``error`` means for it; nothing else is affected."""
        if isinstance(error, Held):
            self.held[error.reason].append(Failure(row.id, str(error)))
        elif isinstance(error, Parked):
            self.parked.append(Failure(row.id, str(error), error.seconds))
        elif isinstance(error, DriftApiError | SegmentError) and error.retryable:
            self.retry.append(Failure(row.id, str(error), error.retry_after))
        elif isinstance(error, DriftApiError | SegmentError | MessageTooLarge | NoContact):
            self.dead.append(Failure(row.id, str(error)))
        else:
            # A translator or the Segment library raised what nobody expected: the row is
            # kept as a dead letter with the reason, to replay after a fix (SPEC §5.8).
            self.dead.append(Failure(row.id, f"cannot translate: {error!r}"[:500]))

    def merge(self, other: Outcomes) -> None:
        """Add what ``other`` (one destination's posts, filed in their own thread) holds."""
        for name in (each.name for each in fields(self)):
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif name == "held":  # lists of failures by hold reason
                for reason, failures in theirs.items():
                    mine[reason] += failures
            else:  # attempts, by row
                mine.update(theirs)


@dataclass
class Prepared:
    """A row ready to send: its messages, where they go, and (identity stitching) the
    identify linking its contact to a user, with the key that records it was sent."""

    row: StoredWebhook
    destination: Destination
    messages: list[dict[str, Any]]
    link: tuple[bytes, dict[str, Any]] | None = None


# The lookups a row has started or waited for, by key: their outcome is the row's.
Lookups_ = dict[tuple[Any, ...], Future[Any]]


@dataclass
class Waiting:
    """A row whose Drift API lookup was still running when the round reached it."""

    row: StoredWebhook
    lookup: Future[Any]
    known: Lookups_


class Busy:
    """The lookup queue is full: the row is tried again in a moment."""


BUSY = Busy()
WAIT = object()  # a row's lookup still runs


def breaker_of(destination: Destination) -> str:
    """The breaker of a Segment destination that is posted to (it has a write key)."""
    assert destination.write_key is not None
    return segment_key(destination.host, destination.write_key)


def done(result: Any) -> Future[Any]:
    """A finished future holding ``result`` (a cached lookup)."""
    future: Future[Any] = Future()
    future.set_result(result)
    return future


class Delivery:
    """One delivery loop. ``run_round`` is one claim-and-send cycle; tests call it directly."""

    def __init__(
        self,
        settings: dict[str, Any],
        store: Store,
        routing: Routing,
        transport: Transport,
        drift_api: DriftApi,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.routing = routing
        self.transport = transport
        self.drift_api = drift_api
        self.drift_writes = DriftWrites(drift_api)
        self.clock = clock
        self.owner = owner or new_owner()
        self.builder = MessageBuilder()
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.lookups = Lookups(on_done=self.wakeup.set, limit_seconds=self.lookup_fallback())
        self.stitching = Stitching.from_settings(settings)
        self.breakers = Breakers(on_change=store.set_breaker, clock=clock)
        # Rows sent back while a lookup ran: made due again once it has ended, then given
        # the lookups they waited for when claimed (forgotten if another loop claims them).
        self._awaiting_lookup: dict[int, Future[Any]] = {}
        self._lookups_of_row: TTLCache[int, Lookups_] = TTLCache(100_000, 600)
        self._last_prune = 0.0
        self._last_checkpoint = float("-inf")
        self._lease_renewed_at = float("-inf")
        # Posts to destinations whose circuit is open, made beside the round (see send).
        self._beside: list[threading.Thread] = []
        self._beside_lock = threading.Lock()

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self, wakeup: threading.Event | None = None) -> None:
        """Deliver until :meth:`stop`; on SQLite only while holding the delivery lease.

        After a full round the next starts at once (a backlog drains at full speed). After
        a partial one the loop waits ``DELIVERY_POLL_SECONDS`` so that new webhooks gather
        into one batch instead of one round each, which under load took half the web
        workers' CPU. Idle, a new webhook wakes the loop at once.
        """
        wakeup = wakeup or self.wakeup
        tune_gc()
        self.lookups = Lookups(on_done=wakeup.set, limit_seconds=self.lookup_fallback())
        singleton = self.store.engine.dialect.name == "sqlite"
        poll = float(self.settings["DELIVERY_POLL_SECONDS"])
        batch_size = int(self.settings["DELIVERY_BATCH_SIZE"])
        log.info("delivery loop started", extra={"owner": self.owner, "singleton": singleton})
        try:
            while not self.stopping.is_set():
                try:
                    if singleton and not self.hold_singleton_lease():
                        self.stopping.wait(poll)
                        continue
                    claimed = self.run_round()
                    self.prune_now_and_then()
                    self.checkpoint_now_and_then()
                except Exception:
                    # Nothing is lost: claimed rows return after their lease. Keep going.
                    log.exception("delivery round failed", extra={"owner": self.owner})
                    self.stopping.wait(poll)
                    continue
                if claimed == 0:
                    wakeup.wait(poll)
                    wakeup.clear()
                elif claimed < batch_size:
                    self.stopping.wait(poll)
        finally:
            released = self.store.release(self.owner)
            if singleton:
                self.store.drop_lease(SQLITE_LEASE, self.owner)
            log.info("delivery loop stopped", extra={"owner": self.owner, "released": released})

    def hold_singleton_lease(self) -> bool:
        """Take or keep the SQLite delivery lease, renewing it when half of it has passed."""
        seconds = float(self.settings["DELIVERY_LEASE_SECONDS"])
        now = self.clock()
        if now - self._lease_renewed_at < seconds / 2:
            return True
        if not self.store.take_lease(SQLITE_LEASE, self.owner, seconds):
            return False
        self._lease_renewed_at = now
        return True

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return its other rows."""
        self.stopping.set()

    def run_round(self) -> int:
        """Claim due rows, deliver them, record outcomes; the number claimed.

        Rows whose lookups are done (or need none) are sent and recorded first; then the
        round waits a moment for the lookups it started, sends what they made ready, and
        sends the rest back to wait for theirs.
        """
        self.make_due_after_lookups()
        lease = float(self.settings["DELIVERY_LEASE_SECONDS"])
        started = time.monotonic()
        deadline = started + lease * ROUND_SHARE_OF_LEASE
        rows = self.store.claim(self.owner, int(self.settings["DELIVERY_BATCH_SIZE"]), lease)
        if not rows:
            return 0
        attempts = {row.id: row.attempts for row in rows}
        outcomes = Outcomes(attempts=attempts)
        ready: list[Prepared] = []
        waiting: list[Waiting] = []
        for row in rows:
            self.prepare(row, outcomes, ready, waiting)
        self.send(ready, outcomes, deadline)
        if waiting:
            self.record(outcomes)
            outcomes = Outcomes(attempts=attempts)
            ready = self.finish_lookups(waiting, outcomes)
            self.send(ready, outcomes, deadline)
        self.record(outcomes)
        return len(rows)

    def make_due_after_lookups(self) -> None:
        """Rows sent back to wait for a lookup that has ended, or for a destination that
        has recovered, are due now."""
        ended = [row_id for row_id, lookup in self._awaiting_lookup.items() if lookup.done()]
        if ended:
            self.store.make_due(ended)
            for row_id in ended:
                del self._awaiting_lookup[row_id]
        for key, orgs in self.breakers.recovered():
            kind = key.partition(":")[0]
            # Rows parked behind the breaker, and those that failed just before it opened.
            prefixes = [PARKED_REASONS[kind], "Segment " if kind == "segment" else "Drift API"]
            made_due = self.store.make_due_after(orgs, prefixes)
            log.info("destination recovered", extra={"destination": key, "made_due": made_due})

    def prune_now_and_then(self) -> None:
        """Delete delivered rows and dedupe keys past their retention, every few minutes."""
        now = self.clock()
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        self.apply_retention(now)
        pruned = self.store.prune(now - float(self.settings["RETENTION_DAYS"]) * 86400)
        metrics.DROPPED.labels(what="delivered").inc(pruned)
        forgotten = self.store.prune_dedupe_keys(
            now - float(self.settings["DEDUPE_RETENTION_DAYS"]) * 86400)
        metrics.DROPPED.labels(what="dedupe_key").inc(forgotten)
        if forgotten:
            log.info("pruned dedupe keys", extra={"count": forgotten})
        # The planner needs fresh statistics of a table that churns this much (PostgreSQL
        # chose full scans for claims on a never-analysed table).
        self.store.analyze()
        if pruned:
            log.info("pruned delivered webhooks", extra={"count": pruned})

    def checkpoint_now_and_then(self) -> None:
        """SQLite: copy the write-ahead log into the database every CHECKPOINT_EVERY_SECONDS,
        here, outside the write lock, rather than in whichever commit (often a webhook's)
        finds the log long (see store.WAL_AUTOCHECKPOINT_PAGES)."""
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_EVERY_SECONDS:
            self._last_checkpoint = now
            self.store.checkpoint()

    def apply_retention(self, now: float) -> None:
        """Held rows past HELD_MAX_AGE_HOURS become dead letters; dead letters and
        quarantine entries past their retention are deleted, each counted and logged first
        (SPEC §5.11)."""
        max_age = float(self.settings["HELD_MAX_AGE_HOURS"])
        expired = self.store.expire_held(now - max_age * 3600, max_age)
        if expired:
            metrics.DROPPED.labels(what="held_expired").inc(expired)
            metrics.DELIVERIES.labels(outcome="dead").inc(expired)
            log.warning("held rows became dead letters", extra={
                "count": expired, "held_max_age_hours": max_age})
        for what, setting, prune in (
                ("dead", "DEAD_LETTER_RETENTION_DAYS", self.store.prune_dead),
                ("quarantine", "QUARANTINE_RETENTION_DAYS", self.store.prune_quarantine)):
            days = float(self.settings[setting])
            before = now - days * 86400
            going = self.store.count_older(what, before)
            if not going:
                continue
            log.warning("deleting rows past their retention", extra={
                "what": what, "count": going, "retention_days": days})
            metrics.DROPPED.labels(what="dead_letter" if what == "dead" else "quarantined"
                                   ).inc(prune(before))

    # -- one row ----------------------------------------------------------------------------

    def prepare(self, row: StoredWebhook, outcomes: Outcomes, ready: list[Prepared],
                waiting: list[Waiting], known: Lookups_ | None = None) -> None:
        """Put a row in ``ready`` (messages built), ``waiting`` (a lookup it needs still
        runs) or under its outcome. Whatever it raises is filed under this row alone.

        Re-entrant: a row whose lookup has ended is prepared again from the start, with
        ``known`` holding the lookups it already waited for (their outcome, error or not).
        """
        if known is None:
            # Most rows never waited for a lookup: no expiry pass over the cache for them.
            known = (self._lookups_of_row.pop(row.id, None) or {}) if self._lookups_of_row \
                else {}
        max_age = float(self.settings["DELIVERY_MAX_AGE_HOURS"]) * 3600
        if self.clock() - row.queued_at > max_age:
            outcomes.dead.append(Failure(row.id, f"undelivered after {max_age / 3600:g} hours"))
            return
        if row.event_type.startswith(SEGMENT_EVENT_PREFIX):
            self.prepare_for_drift(row, outcomes, waiting, known)
            return
        translator = TRANSLATORS.get(row.event_type)
        if translator is None:
            outcomes.dead.append(Failure(row.id, f"no translator for {row.event_type}"))
            return
        try:
            data = translator.reshape(row.payload["data"])
            destination = self.routing.destination(row.org_id)
            conversation = None
            conversation_id = translator.conversation_needed(data)
            if conversation_id is not None:
                conversation = self.outcome(row, self.conversation_lookup(
                    row, conversation_id, known), known, outcomes, waiting)
                if conversation is WAIT:
                    return
            received = datetime.fromtimestamp(row.received_at, tz=UTC)
            calls = translate(translator, row.org_id, data, received, conversation)
            link, messages = None, None  # messages: built here only when stitched
            if self.stitching is not None and calls:
                facts = translator.contact_facts(data)
                lookup = (self.contact_lookup(row, calls[0].anonymous_id, known)
                          if facts.external_id is None else None)
                if lookup is not None:
                    contact = self.outcome(row, lookup, known, outcomes, waiting)
                    if contact is WAIT:
                        return
                    facts = merged(facts, facts_of_contact(contact))
                stitched, link = self.stitching.stitch(row.org_id, calls, facts)
                if link is not None:
                    messages = self.stitched_messages(row, stitched)
                    if messages is None:  # too large with userId: sent unstitched, unlinked
                        link = None
            if messages is None:
                messages = [self.builder.build(call) for call in calls]
            link_message = None if link is None else (link.key, self.builder.build(link.call))
        except Exception as error:
            outcomes.file(row, error)
            return
        ready.append(Prepared(row, destination, messages, link_message))

    def stitched_messages(self, row: StoredWebhook,
                          stitched: list[SegmentCall]) -> list[dict[str, Any]] | None:
        """The stitched calls built, or None when the userId makes one over 32 KB: the door
        measured the messages without it, so the row then goes out as the Drift app would
        send it (anonymousId only) rather than to the dead letters (SPEC §4)."""
        try:
            return [self.builder.build(call) for call in stitched]
        except MessageTooLarge:
            log.warning("stitched message over 32 KB, sent without userId",
                        extra={"webhook_id": row.id})
            return None

    # -- Segment → Drift (SPEC §10) ---------------------------------------------------------

    def prepare_for_drift(self, row: StoredWebhook, outcomes: Outcomes,
                          waiting: list[Waiting], known: Lookups_) -> None:
        """A Segment message: its Drift API writes run beside the round exactly like a lookup
        (the lookup threads, their wall-clock limit, the org's Drift circuit), and the row is
        delivered once they are done. Whatever it raises is filed under this row alone."""
        try:
            actions = drift_actions(row.payload, receipt_ms(row.received_at))
            credentials = self.routing.drift_credentials(row.org_id)
            if credentials is None:
                raise Held(NO_DRIFT_TOKEN, "Segment → Drift writes need DRIFT_ACCESS_TOKEN")
            write = self.start_lookup(
                ("drift_write", row.org_id, row.id), known,
                lambda: self.drift_writes.apply(row.org_id, actions, credentials), row.org_id)
            applied = self.outcome(row, write, known, outcomes, waiting)
            if applied is WAIT:
                return
            if isinstance(applied, NotYet):
                raise self.unknown_user(row, applied)
        except Exception as error:
            outcomes.file(row, error)
            return
        outcomes.delivered.append(row.id)

    def unknown_user(self, row: StoredWebhook, not_yet: NotYet) -> DriftApiError:
        """A user Drift does not know yet: retried until SEGMENT_UNKNOWN_USER_RETRY_MINUTES
        after receipt (the identify that creates the contact may be on its way), then dead."""
        minutes = float(self.settings["SEGMENT_UNKNOWN_USER_RETRY_MINUTES"])
        if self.clock() - row.received_at < minutes * 60:
            return DriftApiError(404, not_yet.reason, retryable=True)
        return DriftApiError(404, f"{not_yet.reason}; given up {minutes:g} min after receipt "
                                  "(SEGMENT_UNKNOWN_USER_RETRY_MINUTES)", retryable=False)

    def outcome(self, row: StoredWebhook, lookup: Future[Any] | Busy, known: Lookups_,
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
            raise Parked(f"{PARKED_REASONS['drift']}: it is not answering (circuit open)",
                         self.breakers.probe_in(breaker))
        if isinstance(error, DriftApiError | Held):
            raise error
        # A hung or garbled answer, a refresh that raised: the Drift API's trouble, not
        # the row's, so the row is retried, never dead-lettered as untranslatable.
        raise DriftApiError(None, f"lookup failed: {error!r}"[:300], retryable=True)

    def conversation_lookup(self, row: StoredWebhook, conversation_id: int | str,
                            known: Lookups_) -> Future[Any] | Busy:
        """The lookup of the Conversation the row needs (done at once when cached)."""
        org_id = row.org_id
        cached = self.drift_api.cached_conversation(org_id, conversation_id)
        if cached is not None:
            return done(cached)
        credentials = self.routing.drift_credentials(org_id)
        if credentials is None:
            raise Held(NO_DRIFT_TOKEN, f"needs GET /conversations/{conversation_id}: "
                                       "set DRIFT_ACCESS_TOKEN")
        return self.start_lookup(("conversation", org_id, str(conversation_id)), known,
                                 lambda: self.drift_api.conversation(org_id, conversation_id,
                                                                     credentials), org_id)

    def contact_lookup(self, row: StoredWebhook, contact_id: str,
                       known: Lookups_) -> Future[Any] | Busy | None:
        """The lookup of the contact's externalId and email, or None without a Drift token
        (then only what the webhook itself says counts, SPEC §3.2)."""
        org_id = row.org_id
        cached = self.drift_api.cached_contact(org_id, contact_id)
        if not isinstance(cached, Missing):
            return done(cached)
        credentials = self.routing.drift_credentials(org_id)
        if credentials is None:
            return None
        return self.start_lookup(("contact", org_id, contact_id), known,
                                 lambda: self.drift_api.contact(org_id, contact_id, credentials),
                                 org_id)

    def start_lookup(self, key: tuple[Any, ...], known: Lookups_, call: Callable[[], Any],
                     org_id: int) -> Future[Any] | Busy:
        """The row's earlier lookup of ``key`` if it has one, else a new (or shared) one;
        Parked while the org's Drift API circuit is open."""
        if key in known:
            return known[key]
        breaker = drift_key(org_id)
        if not self.breakers.allows(breaker, {org_id}):
            raise Parked(f"{PARKED_REASONS['drift']}: it is not answering (circuit open)",
                         self.breakers.probe_in(breaker))
        # Allowed while open: this lookup is the probe, and runs even though it is open.
        probe = self.breakers.is_open(breaker)
        shared = self.lookups.pending(key)
        lookup = self.lookups.start(key, lambda: self.reporting(breaker, org_id, call, probe))
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
            raise Parked(f"{PARKED_REASONS['drift']}: it is not answering (circuit open)",
                         self.breakers.probe_in(breaker))
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

    def finish_lookups(self, waiting: list[Waiting], outcomes: Outcomes) -> list[Prepared]:
        """Wait briefly for the round's lookups, preparing each row again as its lookup ends
        (it may need a second one); rows whose lookup still runs go back to the store."""
        # A healthy Drift answers within the wait (DELIVERY_LOOKUP_WAIT_SECONDS), and no row,
        # nor the next round, waits longer behind a slow one.
        until = time.monotonic() + float(self.settings["DELIVERY_LOOKUP_WAIT_SECONDS"])
        ready: list[Prepared] = []
        while waiting:
            wait_for_futures([item.lookup for item in waiting],
                             timeout=max(0.0, until - time.monotonic()),
                             return_when=FIRST_COMPLETED)
            ended = [item for item in waiting if item.lookup.done()]
            if not ended:
                break
            waiting = [item for item in waiting if not item.lookup.done()]
            for item in ended:
                self.prepare(item.row, outcomes, ready, waiting, item.known)
        for item in waiting:
            self._awaiting_lookup[item.row.id] = item.lookup
            self._lookups_of_row[item.row.id] = item.known
            outcomes.awaiting_lookup.append(Failure(item.row.id, "waiting for a Drift API lookup"))
        return ready

    # -- sending ----------------------------------------------------------------------------

    def send(self, ready: list[Prepared], outcomes: Outcomes, deadline: float) -> None:
        """Post every destination's messages; sort rows by Segment's answers."""
        self.add_links(ready)
        by_destination: dict[Destination, list[Prepared]] = defaultdict(list)
        for prepared in ready:
            by_destination[prepared.destination].append(prepared)
        live: list[tuple[Destination, list[Prepared]]] = []
        for destination, prepared_rows in by_destination.items():
            if destination.dry_run:
                self.log_dry_run(prepared_rows)
                outcomes.dry_run.extend(prepared.row.id for prepared in prepared_rows)
            else:
                live.append((destination, prepared_rows))
        if len(live) == 1:
            self.send_to(*live[0], outcomes, deadline)
            return
        # A Segment host that hangs holds only its own rows (SPEC §5.8): each destination
        # posts in a thread of its own and files its outcomes apart, merged here. One whose
        # circuit is open (its probe may hang for the whole timeout) is not waited for: its
        # rows stay leased to this loop and its thread records them when it is done.
        waited: list[tuple[Destination, list[Prepared]]] = []
        for item in live:
            if self.breakers.is_open(breaker_of(item[0])):
                self.send_beside(item, outcomes.attempts, deadline)
            else:
                waited.append(item)

        def posted(item: tuple[Destination, list[Prepared]]) -> Outcomes:
            own = Outcomes()
            self.send_to(*item, own, deadline)
            return own

        if waited:
            with ThreadPoolExecutor(min(DESTINATIONS_AT_ONCE, len(waited)),
                                    thread_name_prefix="segment-post") as pool:
                for own in pool.map(posted, waited):
                    outcomes.merge(own)

    def send_beside(self, item: tuple[Destination, list[Prepared]], attempts: dict[int, int],
                    deadline: float) -> None:
        """Post one destination's rows (and record them) in a thread the round does not
        wait for."""
        own = Outcomes(attempts={prepared.row.id: attempts.get(prepared.row.id, 0)
                                 for prepared in item[1]})

        def post_and_record() -> None:
            try:
                self.send_to(*item, own, deadline)
                self.record(own)
            except Exception:  # the rows stay leased and are claimed again after the lease
                log.exception("posting beside the round failed")

        thread = threading.Thread(target=post_and_record, name="segment-probe", daemon=True)
        with self._beside_lock:
            self._beside = [running for running in self._beside if running.is_alive()]
            self._beside.append(thread)
        thread.start()

    def wait_beside(self, timeout: float) -> None:
        """Wait for posts made beside the round (tests: a stopping loop does not wait, it
        hands their rows back; a copy then sent again keeps its messageIds)."""
        until = time.monotonic() + timeout
        with self._beside_lock:
            running = list(self._beside)
        for thread in running:
            thread.join(max(0.0, until - time.monotonic()))

    def add_links(self, ready: list[Prepared]) -> None:
        """Put each linking identify not sent yet in front of its row's messages, once per
        round; the others are dropped (sent before, by this loop or another, SPEC §3.2)."""
        linking = [(prepared, prepared.link) for prepared in ready if prepared.link is not None]
        if not linking:
            return
        sent = self.store.known_keys({key for _, (key, _) in linking})
        for prepared, (key, message) in linking:
            if key in sent:
                prepared.link = None
                continue
            sent.add(key)
            prepared.messages.insert(0, message)

    def send_to(self, destination: Destination, rows: list[Prepared], outcomes: Outcomes,
                deadline: float) -> None:
        """Post one destination's messages in batches; a row is delivered when all are."""
        messages: list[dict[str, Any]] = []
        row_of: list[int] = []
        for position, prepared in enumerate(rows):
            messages.extend(prepared.messages)
            row_of.extend([position] * len(prepared.messages))
        failed: dict[int, Exception] = {}
        not_tried: set[int] = set()
        outage: SegmentError | None = None
        breaker = breaker_of(destination)
        orgs = {prepared.row.org_id for prepared in rows}
        parked: set[int] = set()
        for batch in self.probe_first(breaker, list(batches(messages)), row_of):
            if outage is not None or not self.breakers.allows(breaker, orgs):
                if self.breakers.is_open(breaker):
                    # Segment is down: its rows wait for the probe, spending no attempt.
                    parked.update(row_of[i] for i in batch)
                else:
                    failed.update({row_of[i]: outage or SegmentError(None, "")
                                   for i in batch})
                continue
            if self.stopping.is_set() or time.monotonic() > deadline:
                not_tried.update(row_of[i] for i in batch)
                self.breakers.not_probed(breaker)
                continue
            answered, hung = True, False
            for index, error in self.post_isolating(destination, messages, batch, deadline):
                failed.setdefault(row_of[index], error)
                if isinstance(error, SegmentError) and error.retryable:
                    outage, answered = error, False
                    hung = hung or error.timed_out
            if answered:
                self.breakers.succeeded(breaker)
            else:
                self.breakers.failed(breaker, orgs, hung=hung)
        circuit_open = self.breakers.is_open(breaker)
        for position, prepared in enumerate(rows):
            refusal = failed.get(position)
            if circuit_open and isinstance(refusal, SegmentError) and refusal.retryable:
                # Tried (the probe, or the batch that opened the circuit), but the outage is
                # the destination's: the row waits for the next probe like the others.
                parked.add(position)
                refusal = None
            if position in parked and refusal is None:
                outcomes.parked.append(Failure(
                    prepared.row.id, f"{PARKED_REASONS['segment']}: {destination.host} is "
                    "not answering (circuit open)", self.breakers.probe_in(breaker)))
            elif isinstance(refusal, NotTried) or (refusal is None and position in not_tried):
                outcomes.deferred.append(Failure(prepared.row.id, "round ended before posting"))
            elif refusal is not None:
                outcomes.file(prepared.row, refusal)
            else:
                outcomes.delivered.append(prepared.row.id)
                if prepared.link is not None:
                    outcomes.links_sent.append(prepared.link[0])
                metrics.DELIVERY_LATENCY.observe(max(0.0, self.clock() - prepared.row.received_at))

    def probe_first(self, breaker: str, planned: list[list[int]],
                    row_of: list[int]) -> list[list[int]]:
        """The batches to post; while the destination's circuit is open, the first is one
        row's messages alone, so a probe costs one attempt, not a batch of them."""
        if not planned or not self.breakers.is_open(breaker):
            return planned
        first = planned[0]
        probe = [index for index in first if row_of[index] == row_of[first[0]]]
        rest = [index for index in first if row_of[index] != row_of[first[0]]]
        return [probe, *([rest] if rest else []), *planned[1:]]

    def post_isolating(
        self, destination: Destination, messages: list[dict[str, Any]], batch: list[int],
        deadline: float,
    ) -> list[tuple[int, Exception]]:
        """Post a batch; on 400/413 (or an error raised while posting it) split it to find
        the messages at fault. The indexes that failed, with why."""
        assert destination.write_key is not None
        write_key = destination.write_key
        try:
            call_within(self.posts_end(deadline) - time.monotonic(), lambda: self.transport.post(
                write_key, destination.host, [messages[i] for i in batch]))
        except TookTooLong as error:
            metrics.SEGMENT_BATCHES.labels(status="network").inc()
            log.warning("segment did not answer in time", extra={"messages": len(batch)})
            return [(index, SegmentError(None, str(error), timed_out=True)) for index in batch]
        except SegmentError as error:
            metrics.SEGMENT_BATCHES.labels(status=str(error.status or "network")).inc()
            if error.status in (400, 413) and len(batch) > 1:
                return self.split(destination, messages, batch, deadline, error)
            log.warning("segment refused a batch", extra={"status": error.status,
                                                          "messages": len(batch)})
            return [(index, error) for index in batch]
        except Exception as error:
            # Nobody expected this (the transport should raise SegmentError): split the
            # batch so the others go out, and retry the message that raises, never drop it.
            log.warning("posting a batch raised", extra={"error": repr(error)[:300],
                                                          "messages": len(batch)})
            if len(batch) > 1:
                return self.split(destination, messages, batch, deadline, error)
            return [(batch[0], SegmentError(None, f"posting raised {error!r}"[:300]))]
        metrics.SEGMENT_BATCHES.labels(status="2xx").inc()
        metrics.SEGMENT_MESSAGES.inc(len(batch))
        return []

    def posts_end(self, deadline: float) -> float:
        """When the posts of the round with this ``deadline`` must end: worked out from the
        round's own deadline, because a post made beside the round (see send) outlives it
        and later rounds, and must still end inside its own rows' lease."""
        lease = float(self.settings["DELIVERY_LEASE_SECONDS"])
        return deadline + lease * (POSTS_END_BY_SHARE_OF_LEASE - ROUND_SHARE_OF_LEASE)

    def split(self, destination: Destination, messages: list[dict[str, Any]], batch: list[int],
              deadline: float, error: Exception) -> list[tuple[int, Exception]]:
        """Post each half of a refused batch on its own (unless the round is out of time)."""
        if time.monotonic() > deadline or self.stopping.is_set():
            # Which message Segment refused is unknown: none may be dead-lettered for it.
            return [(index, NotTried(str(error))) for index in batch]
        middle = len(batch) // 2
        return (self.post_isolating(destination, messages, batch[:middle], deadline)
                + self.post_isolating(destination, messages, batch[middle:], deadline))

    def log_dry_run(self, rows: list[Prepared]) -> None:
        """Dry-run: show each message that would have been sent."""
        for prepared in rows:
            for message in prepared.messages:
                log.info("dry-run: would send to Segment",
                         extra={"webhook_id": prepared.row.id,
                                "segment_message": json.loads(json.dumps(message, default=str))})

    # -- outcomes ---------------------------------------------------------------------------

    def record(self, outcomes: Outcomes) -> None:
        """Write every row's outcome to the store and count it."""
        exhausted, retry = self.split_exhausted(outcomes)
        self.store.record(
            self.owner,
            delivered=outcomes.delivered,
            dry_run=outcomes.dry_run,
            dead=outcomes.dead + exhausted,
            held=outcomes.held,
            retry=self.schedule(retry, outcomes.attempts),
            deferred={self.clock() + DEFER_SECONDS: outcomes.deferred,
                      self.clock() + self.lookup_fallback(): outcomes.awaiting_lookup},
            parked=outcomes.parked,
            remember=outcomes.links_sent,
        )
        counts = {"delivered": len(outcomes.delivered), "dry_run": len(outcomes.dry_run),
                  "dead": len(outcomes.dead) + len(exhausted), "retried": len(retry),
                  "held": sum(len(failures) for failures in outcomes.held.values()),
                  "deferred": len(outcomes.deferred) + len(outcomes.awaiting_lookup),
                  "parked": len(outcomes.parked)}
        for outcome, number in counts.items():
            if number:
                metrics.DELIVERIES.labels(outcome=outcome).inc(number)
        for failure in outcomes.dead + exhausted:
            log.warning("dead-lettered", extra={"webhook_id": failure.id,
                                                "reason": failure.reason})
        log.info("delivery round", extra={"owner": self.owner, **counts})

    def split_exhausted(self, outcomes: Outcomes) -> tuple[list[Failure], list[Failure]]:
        """Separate rows out of attempts (they go to the dead letters) from the rest."""
        limit = int(self.settings["DELIVERY_MAX_ATTEMPTS"])
        exhausted, retry = [], []
        for failure in outcomes.retry:
            if outcomes.attempts[failure.id] >= limit:
                exhausted.append(
                    Failure(failure.id, f"gave up after {limit} attempts: {failure.reason}"))
            else:
                retry.append(failure)
        return exhausted, retry

    def lookup_fallback(self) -> float:
        """Seconds until a row waiting for a lookup is due even if nobody makes it due: the
        longest a lookup takes (two tries), or none when this loop is stopping."""
        if self.stopping.is_set():
            return 0.0
        return 2 * float(self.settings["DRIFT_TIMEOUT_SECONDS"]) + 1

    def schedule(self, retry: list[Failure], attempts: dict[int, int]
                 ) -> dict[float, list[Failure]]:
        """When each row is tried again: by its own attempts and Retry-After, so that one
        row's long wait is never every row's (one jittered delay per group, one UPDATE)."""
        groups: dict[tuple[int, float | None], list[Failure]] = defaultdict(list)
        for failure in retry:
            groups[(attempts[failure.id], failure.retry_after)].append(failure)
        now = self.clock()
        # Groups can fall on one time (the same Retry-After, or the ceiling): they share it,
        # or the later group would replace the earlier and its rows stay leased, unrecorded.
        scheduled: dict[float, list[Failure]] = defaultdict(list)
        for (count, retry_after), failures in groups.items():
            scheduled[now + self.backoff(count, retry_after)].extend(failures)
        return scheduled

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter under the ceiling; not sooner than Retry-After,
        which is itself capped by the ceiling (Drift's has no bound)."""
        base = float(self.settings["DELIVERY_BACKOFF_SECONDS"])
        ceiling = float(self.settings["DELIVERY_BACKOFF_MAX_SECONDS"])
        delay = random.uniform(base / 2, min(ceiling, base * 2 ** (attempts - 1)))
        return min(ceiling, max(delay, retry_after or 0))
