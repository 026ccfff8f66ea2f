"""The delivery loop: claim stored webhooks, translate, post to Segment, record the outcome.

At-least-once: a row is marked delivered only after Segment's 2xx for all its messages;
anything unconfirmed goes back to the store (retry with backoff, hold, or dead letter).
Deterministic messageIds let Segment drop the copies a retry may cause.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import metrics
from .drift_api import DriftApi, DriftApiError
from .routing import NO_DRIFT_TOKEN, Destination, Held, Routing
from .segment_out import MessageBuilder, MessageTooLarge, SegmentError, Transport, batches
from .store import Failure, Store, StoredWebhook
from .translators import TRANSLATORS, translate

log = logging.getLogger("drift_segment_source.delivery")

SQLITE_LEASE = "delivery"
PRUNE_EVERY_SECONDS = 600


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
    retry_after: float | None = None
    attempts: dict[int, int] = field(default_factory=dict)
    held: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class Prepared:
    """A row ready to send: its messages and where they go."""

    row: StoredWebhook
    destination: Destination
    messages: list[dict[str, Any]]


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
        self.clock = clock
        self.owner = owner or new_owner()
        self.builder = MessageBuilder()
        self.stopping = threading.Event()
        self._last_prune = 0.0
        self._lease_renewed_at = float("-inf")

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self, wakeup: threading.Event | None = None) -> None:
        """Deliver until :meth:`stop`; on SQLite only while holding the delivery lease.

        After a full round the next starts at once (a backlog drains at full speed). After
        a partial one the loop waits ``DELIVERY_POLL_SECONDS`` so that new webhooks gather
        into one batch instead of one round each, which under load took half the web
        workers' CPU. Idle, a new webhook wakes the loop at once.
        """
        wakeup = wakeup or threading.Event()
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
        """Claim due rows, deliver them, record outcomes; the number claimed."""
        rows = self.store.claim(self.owner, int(self.settings["DELIVERY_BATCH_SIZE"]),
                                float(self.settings["DELIVERY_LEASE_SECONDS"]))
        if not rows:
            return 0
        outcomes = Outcomes(attempts={row.id: row.attempts for row in rows})
        ready = [prepared for row in rows if (prepared := self.prepare(row, outcomes))]
        self.send(ready, outcomes)
        self.record(outcomes)
        return len(rows)

    def prune_now_and_then(self) -> None:
        """Delete delivered rows past the retention period, every few minutes."""
        now = self.clock()
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        pruned = self.store.prune(now - float(self.settings["RETENTION_DAYS"]) * 86400)
        # The planner needs fresh statistics of a table that churns this much (PostgreSQL
        # chose full scans for claims on a never-analysed table).
        self.store.analyze()
        if pruned:
            log.info("pruned delivered webhooks", extra={"count": pruned})

    # -- one row ----------------------------------------------------------------------------

    def prepare(self, row: StoredWebhook, outcomes: Outcomes) -> Prepared | None:
        """Translate a row into messages, or file it under its outcome and return None."""
        max_age = float(self.settings["DELIVERY_MAX_AGE_HOURS"]) * 3600
        if self.clock() - row.queued_at > max_age:
            outcomes.dead.append(Failure(row.id, f"undelivered after {max_age / 3600:g} hours"))
            return None
        translator = TRANSLATORS.get(row.event_type)
        if translator is None:
            outcomes.dead.append(Failure(row.id, f"no translator for {row.event_type}"))
            return None
        try:
            data = translator.reshape(row.payload["data"])
            destination = self.routing.destination(row.org_id)
            conversation = self.look_up(row, translator.conversation_needed(data))
            received = datetime.fromtimestamp(row.received_at, tz=UTC)
            calls = translate(translator, row.org_id, data, received, conversation)
            messages = [self.builder.build(call) for call in calls]
        except MessageTooLarge as error:
            outcomes.dead.append(Failure(row.id, str(error)))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # Stored data that no longer fits its translator (it passed validation when it
            # arrived): keep it as a dead letter to replay after a fix, never crash the loop.
            outcomes.dead.append(Failure(row.id, f"cannot translate: {error!r}"))
        except Held as held:
            outcomes.held[held.reason].append(Failure(row.id, str(held)))
        except DriftApiError as error:
            if error.retryable:
                outcomes.retry.append(Failure(row.id, str(error)))
                outcomes.retry_after = max(outcomes.retry_after or 0, error.retry_after or 0)
            else:
                outcomes.dead.append(Failure(row.id, str(error)))
        else:
            return Prepared(row, destination, messages)
        return None

    def look_up(self, row: StoredWebhook, conversation_id: int | str | None) -> Any:
        """The Conversation the event needs, or None when it needs none."""
        if conversation_id is None:
            return None
        credentials = self.routing.drift_credentials(row.org_id)
        if credentials is None:
            raise Held(NO_DRIFT_TOKEN, f"needs GET /conversations/{conversation_id}: "
                                       "set DRIFT_ACCESS_TOKEN")
        return self.drift_api.conversation(row.org_id, conversation_id, credentials)

    # -- sending ----------------------------------------------------------------------------

    def send(self, ready: list[Prepared], outcomes: Outcomes) -> None:
        """Post every destination's messages; sort rows by Segment's answers."""
        by_destination: dict[Destination, list[Prepared]] = defaultdict(list)
        for prepared in ready:
            by_destination[prepared.destination].append(prepared)
        for destination, prepared_rows in by_destination.items():
            if destination.dry_run:
                self.log_dry_run(prepared_rows)
                outcomes.dry_run.extend(prepared.row.id for prepared in prepared_rows)
            else:
                self.send_to(destination, prepared_rows, outcomes)

    def send_to(self, destination: Destination, rows: list[Prepared], outcomes: Outcomes) -> None:
        """Post one destination's messages in batches; a row is delivered when all are."""
        messages: list[dict[str, Any]] = []
        row_of: list[int] = []
        for position, prepared in enumerate(rows):
            messages.extend(prepared.messages)
            row_of.extend([position] * len(prepared.messages))
        failed: dict[int, SegmentError] = {}
        outage: SegmentError | None = None
        for batch in batches(messages):
            if outage is not None or self.stopping.is_set():
                # Segment is down (or we are shutting down): don't hammer it, retry later.
                failed.update({row_of[i]: outage or SegmentError(None, "shutting down")
                               for i in batch})
                continue
            for index, error in self.post_isolating(destination, messages, batch):
                failed.setdefault(row_of[index], error)
                if error.retryable:
                    outage = error
        for position, prepared in enumerate(rows):
            refusal = failed.get(position)
            if refusal is None:
                outcomes.delivered.append(prepared.row.id)
                metrics.DELIVERY_LATENCY.observe(max(0.0, self.clock() - prepared.row.received_at))
            elif refusal.retryable:
                outcomes.retry.append(Failure(prepared.row.id, str(refusal)))
                outcomes.retry_after = max(outcomes.retry_after or 0, refusal.retry_after or 0)
            else:
                outcomes.dead.append(Failure(prepared.row.id, str(refusal)))

    def post_isolating(
        self, destination: Destination, messages: list[dict[str, Any]], batch: list[int]
    ) -> list[tuple[int, SegmentError]]:
        """Post a batch; on 400/413 split it to find the refused messages. Failed indexes."""
        assert destination.write_key is not None
        try:
            self.transport.post(destination.write_key, destination.host,
                                [messages[i] for i in batch])
        except SegmentError as error:
            metrics.SEGMENT_BATCHES.labels(status=str(error.status or "network")).inc()
            if error.status in (400, 413) and len(batch) > 1:
                middle = len(batch) // 2
                return (self.post_isolating(destination, messages, batch[:middle])
                        + self.post_isolating(destination, messages, batch[middle:]))
            log.warning("segment refused a batch", extra={"status": error.status,
                                                          "messages": len(batch)})
            return [(index, error) for index in batch]
        metrics.SEGMENT_BATCHES.labels(status="2xx").inc()
        metrics.SEGMENT_MESSAGES.inc(len(batch))
        return []

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
            retry=retry,
            next_attempt_at=self.clock() + self.backoff(retry, outcomes) if retry else None,
        )
        counts = {"delivered": len(outcomes.delivered), "dry_run": len(outcomes.dry_run),
                  "dead": len(outcomes.dead) + len(exhausted), "retried": len(retry),
                  "held": sum(len(failures) for failures in outcomes.held.values())}
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

    def backoff(self, retry: list[Failure], outcomes: Outcomes) -> float:
        """Exponential backoff with jitter under the ceiling; never sooner than Retry-After."""
        attempts = max((outcomes.attempts[failure.id] for failure in retry), default=1)
        base = float(self.settings["DELIVERY_BACKOFF_SECONDS"])
        ceiling = float(self.settings["DELIVERY_BACKOFF_MAX_SECONDS"])
        delay = random.uniform(base / 2, min(ceiling, base * 2 ** (attempts - 1)))
        return max(min(ceiling, delay), outcomes.retry_after or 0)
