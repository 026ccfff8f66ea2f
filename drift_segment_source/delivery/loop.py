"""The delivery loop: claim stored rows, prepare them, hand them to their lanes, record.

At-least-once: a row is marked delivered only after its destination confirmed it; anything
unconfirmed goes back to the store (retried with backoff, held, parked, or dead-lettered).
Deterministic messageIds let Segment drop the copies a retry may cause.

One round: claim due rows (leased for ``DELIVERY_LEASE_SECONDS``) → prepare each
(to_segment.py, to_drift.py; Drift API lookups run beside the round, lookups.py) → hand each
Segment destination's rows to its lane (lanes.py), which posts and records them itself →
wait for the lanes at most until the round's deadline → record what the round itself
decided. Failure stays with its row: whatever one row raises is filed under it alone.

The thread model (docs/architecture.md): this loop's thread; one thread per busy lane; at
most MAX_RUNNING lookup threads; every one a daemon that touches only its own rows.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections import defaultdict
from concurrent.futures import Future

from drift_segment_source.clock import SYSTEM_CLOCK, Clock
from drift_segment_source.destinations.drift import DriftWrites
from drift_segment_source.destinations.segment import MessageBuilder, Transport
from drift_segment_source.drift_api import DriftApi
from drift_segment_source.routing import NO_WRITE_KEY, Destination, Held, Routing
from drift_segment_source.sources.segment.translators import (
    EVENT_TYPE_PREFIX as SEGMENT_EVENT_PREFIX,
)
from drift_segment_source.store.store import Failure, Store, StoredWebhook

from .breakers import Breakers
from .housekeeping import Housekeeping, tune_gc
from .lanes import Lanes
from .lookups import START_GRACE_SECONDS, DriftLookups
from .outcomes import Outcomes, Parked, Recorder, RetryPolicy
from .posting import Deadlines, Poster, breaker_of, segment_parked
from .rows import Known, Prepared, Waiting
from .settings import DeliverySettings, RetentionSettings
from .stitching import Stitching
from .to_drift import ToDrift
from .to_segment import ToSegment

log = logging.getLogger("drift_segment_source.delivery")

SQLITE_LEASE = "delivery"
# A round starts no new post after this share of its lease, so that even a post that then
# takes its whole timeout ends before the lease does (no other loop takes the rows).
ROUND_SHARE_OF_LEASE = 1 / 3
# No post outlives this share of the lease, whatever Segment does.
POSTS_END_BY_SHARE_OF_LEASE = 0.8
# The lane's outcome is recorded within this share of the lease after its posts end.
RECORDING_SHARE_OF_LEASE = 0.1


def new_owner() -> str:
    """A name for this delivery loop, unique across processes and hosts."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Delivery:
    """One delivery loop. ``run_round`` is one claim-and-send cycle; tests call it directly."""

    def __init__(self, settings: DeliverySettings, retention: RetentionSettings, store: Store,
                 routing: Routing, transport: Transport, drift_api: DriftApi,
                 stitching: Stitching | None = None, clock: Clock = SYSTEM_CLOCK,
                 owner: str | None = None, wakeup: threading.Event | None = None) -> None:
        self.settings = settings
        self.store = store
        self.routing = routing
        self.clock = clock
        self.owner = owner or new_owner()
        self.stopping = threading.Event()
        # Set by the web side when it stores a webhook, and when a lookup ends.
        self.wakeup = wakeup or threading.Event()
        self.lookup_ended = threading.Event()
        self.breakers = Breakers(on_change=store.set_breaker, clock=clock)
        self.lookups = DriftLookups(drift_api, routing, self.breakers, clock,
                                    settings.lookup_wait_seconds, settings.lookup_limit_seconds,
                                    on_done=self.on_lookup_ended)
        self.recorder = Recorder(store, self.owner, RetryPolicy(
            settings.backoff_seconds, settings.backoff_max_seconds, settings.max_attempts),
            clock, 2 * (settings.lookup_limit_seconds + START_GRACE_SECONDS),
            settings.max_age_hours * 3600)
        self.to_segment = ToSegment(routing, self.lookups, MessageBuilder(), stitching)
        self.to_drift = ToDrift(routing, self.lookups, DriftWrites(drift_api), clock,
                                settings.unknown_user_retry_minutes)
        self.lanes = Lanes(Poster(transport, self.breakers, clock, self.stopping),
                           self.recorder.record, clock, self.stopping)
        self.housekeeping = Housekeeping(store, clock, settings, retention)
        self._lease_renewed_at = float("-inf")
        # The last round sent rows back because their destination's lane was busy: the loop
        # waits a poll interval rather than claiming them again at once.
        self.paced = False
        # Keys of linking identifies handed to a lane and not recorded yet: another row of
        # the same contact must not carry the link meanwhile (its job may still fail).
        self._links_in_flight: set[bytes] = set()
        self._links_lock = threading.Lock()

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Deliver until :meth:`stop`; on SQLite only while holding the delivery lease.

        After a full round the next starts at once (a backlog drains at full speed). After
        a partial one the loop waits ``DELIVERY_POLL_SECONDS`` so that new webhooks gather
        into one batch instead of one round each, which under load took half the web
        workers' CPU. Idle, a new webhook (or an ended lookup) wakes the loop at once.
        """
        tune_gc()
        singleton = self.store.dialect == "sqlite"
        poll = self.settings.poll_seconds
        log.info("delivery loop started", extra={"owner": self.owner, "singleton": singleton})
        self.call_parked_rows()
        try:
            while not self.stopping.is_set():
                try:
                    if singleton and not self.hold_singleton_lease():
                        self.clock.wait(self.stopping, poll)
                        continue
                    claimed = self.run_round()
                    self.housekeeping.now_and_then()
                except Exception:
                    # Nothing is lost: claimed rows return after their lease. Keep going.
                    log.exception("delivery round failed", extra={"owner": self.owner})
                    self.clock.wait(self.stopping, poll)
                    continue
                if claimed == 0:
                    self.clock.wait(self.wakeup, poll)
                    self.wakeup.clear()
                elif claimed < self.settings.batch_size or self.paced:
                    self.clock.wait(self.stopping, poll)
        finally:
            released = self.store.release(self.owner)
            if singleton:
                self.store.drop_lease(SQLITE_LEASE, self.owner)
            log.info("delivery loop stopped", extra={"owner": self.owner, "released": released})

    def on_lookup_ended(self) -> None:
        """A lookup ended: the loop wakes to make its waiting rows due."""
        self.lookup_ended.set()
        self.wakeup.set()

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread of its own (the web workers' delivery)."""
        thread = threading.Thread(target=self.run_forever, name="delivery", daemon=True)
        thread.start()
        return thread

    def hold_singleton_lease(self) -> bool:
        """Take or keep the SQLite delivery lease, renewing it when half of it has passed."""
        seconds = self.settings.lease_seconds
        now = self.clock.monotonic()
        if now - self._lease_renewed_at < seconds / 2:
            return True
        if not self.store.take_lease(SQLITE_LEASE, self.owner, seconds):
            return False
        self._lease_renewed_at = now
        return True

    def stop(self) -> None:
        """Ask the loop to finish its current round and hand its other rows back."""
        self.stopping.set()
        self.wakeup.set()

    # -- one round --------------------------------------------------------------------------

    def call_parked_rows(self) -> None:
        """Rows an earlier process parked behind a circuit (for up to PARK_SECONDS) are due:
        this one has seen no circuit open, and the destination may have been fixed."""
        try:
            made_due = self.store.make_parked_due()
        except Exception:  # the loop retries the store every round; nothing is lost here
            log.exception("could not make parked rows due", extra={"owner": self.owner})
            return
        if made_due:
            log.info("rows parked by an earlier process are due", extra={"count": made_due})

    def run_round(self) -> int:
        """Claim due rows, deliver them, record outcomes; the number claimed.

        Rows whose lookups are done (or need none) go to their lanes first; then the round
        waits a moment for the lookups it started, hands over what they made ready, and
        sends the rest back to wait for theirs. The round then waits for the lanes of the
        destinations that answer, at most ``lane_wait_seconds``: a healthy Segment answers
        well within it, and a slow one holds up its own lane only (the probe of a destination
        that does not answer is not waited for at all).
        """
        self.make_due_what_waited()
        lease = self.settings.lease_seconds
        started = self.clock.monotonic()
        deadlines = Deadlines(start_by=started + lease * ROUND_SHARE_OF_LEASE,
                              end_by=started + lease * POSTS_END_BY_SHARE_OF_LEASE)
        # Rows whose lookup ended here are taken back by this loop, which holds the outcome
        # (another loop would make the lookup, or the Drift write, again).
        ended = self.lookups.ended()
        rows = self.store.claim(self.owner, len(ended), lease, ids=ended) if ended else []
        rows += self.store.claim(self.owner, self.settings.batch_size - len(rows), lease)
        if not rows:
            return 0
        self.paced = False
        outcomes = Outcomes(attempts={row.id: row.attempts for row in rows},
                            queued={row.id: row.queued_at for row in rows})
        ready: list[Prepared] = []
        waiting: list[Waiting] = []
        for row in rows:
            self.prepare(row, outcomes, ready, waiting, self.lookups.known_for(row.id))
        jobs = self.dispatch(ready, outcomes, deadlines)
        if waiting:
            ready = []
            self.lookups.finish(waiting, outcomes, lambda row, own, still, known: self.prepare(
                row, own, ready, still, known))
            jobs += self.dispatch(ready, outcomes, deadlines)
        self.recorder.record(outcomes)
        waited_until = min(deadlines.end_by + lease * RECORDING_SHARE_OF_LEASE,
                           started + self.settings.lane_wait_seconds)
        self.lanes.wait(jobs, waited_until - self.clock.monotonic(), self.stopping)
        return len(rows)

    def make_due_what_waited(self) -> None:
        """Rows sent back to wait for a destination that has recovered are due now."""
        for destination, orgs in self.breakers.recovered():
            made_due = self.store.make_due_behind(destination)
            if made_due or orgs:  # said only when something waited for it
                log.info("destination recovered", extra={"destination": destination,
                                                         "made_due": made_due})

    def prepare(self, row: StoredWebhook, outcomes: Outcomes, ready: list[Prepared],
                waiting: list[Waiting], known: Known) -> None:
        """Prepare a row for its direction (a row past the age limit ages out only when it
        still cannot be delivered: see Recorder)."""
        if row.event_type.startswith(SEGMENT_EVENT_PREFIX):
            self.to_drift.prepare(row, outcomes, waiting, known)
        else:
            self.to_segment.prepare(row, outcomes, ready, waiting, known)

    def dispatch(self, ready: list[Prepared], outcomes: Outcomes,
                 deadlines: Deadlines) -> list[Future[None]]:
        """Hand each destination's rows to its lane; the jobs the round waits for (those of
        destinations that answer: a failing one's probe is not waited for)."""
        self.add_links(ready)
        by_destination: dict[Destination, list[Prepared]] = defaultdict(list)
        for prepared in ready:
            by_destination[prepared.destination].append(prepared)
        waited: list[Future[None]] = []
        for destination, rows in by_destination.items():
            if destination.dry_run:
                self.dry_run(rows, outcomes)
                continue
            breaker = breaker_of(destination)
            if self.breakers.is_open(breaker) and not self.breakers.probe_due(breaker):
                # Its circuit is open and no probe is due: the rows wait, spending no attempt.
                for index, prepared in enumerate(rows):
                    outcomes.file(prepared.row.id, Parked(
                        segment_parked(destination), breaker,
                        self.breakers.park_seconds(breaker, keep_for_probe=index == 0)))
                continue
            if self.lanes.busy(destination):
                # Its lane still posts earlier rows: these go back for a moment, so a slow
                # destination holds up neither the round nor another destination's rows.
                outcomes.deferred.extend(Failure(prepared.row.id, "its destination is still "
                                                 "posting earlier rows") for prepared in rows)
                self.paced = True
                continue
            answering = not self.breakers.is_open(breaker)
            job = self.lanes.submit(destination, rows, outcomes.for_rows(
                [prepared.row.id for prepared in rows]), deadlines)
            self.hold_links_until_recorded(job, rows)
            if answering:
                waited.append(job)
        return waited

    def add_links(self, ready: list[Prepared]) -> None:
        """Put each linking identify not sent yet in front of its row's messages, once per
        round; the others are dropped (sent before, by this loop or another)."""
        linking = [(prepared, prepared.link) for prepared in ready if prepared.link is not None]
        if not linking:
            return
        sent = self.store.known_keys({key for _, (key, _) in linking})
        with self._links_lock:
            sent |= self._links_in_flight
        for prepared, (key, message) in linking:
            if key in sent:
                prepared.link = None
                continue
            sent.add(key)
            prepared.messages.insert(0, message)

    def hold_links_until_recorded(self, job: Future[None], rows: list[Prepared]) -> None:
        """Mark the job's linking identifies as in flight until its outcome is recorded."""
        keys = {prepared.link[0] for prepared in rows if prepared.link is not None}
        if not keys:
            return
        with self._links_lock:
            self._links_in_flight |= keys

        def recorded(_: Future[None]) -> None:
            with self._links_lock:
                self._links_in_flight -= keys

        job.add_done_callback(recorded)

    def dry_run(self, rows: list[Prepared], outcomes: Outcomes) -> None:
        """Log the rows taken in as a dry run; hold the others for a write key (taken in
        with one, they meet a process without it: a restart without SEGMENT_WRITE_KEY, or
        a second service on the same store)."""
        taken_in_dry_run = []
        for prepared in rows:
            if prepared.row.taken_in_dry_run:
                taken_in_dry_run.append(prepared)
                outcomes.dry_run.append(prepared.row.id)
            else:
                outcomes.file(prepared.row.id, Held(
                    NO_WRITE_KEY, "taken in with a write key, and this process has none"))
        self.log_dry_run(taken_in_dry_run)

    def log_dry_run(self, rows: list[Prepared]) -> None:
        """Dry-run: show each message that would have been sent."""
        for prepared in rows:
            for message in prepared.messages:
                log.info("dry-run: would send to Segment",
                         extra={"webhook_id": prepared.row.id,
                                "segment_message": json.loads(json.dumps(message,
                                                                         default=str))})

    def drain(self, timeout: float) -> bool:
        """Wait for every lane's jobs to be recorded (tests; a stopping loop does not wait,
        it hands their rows back, and a copy sent again keeps its messageIds)."""
        return self.lanes.drain(timeout)

