"""Posting one destination's rows to Segment: batches, isolation of refused messages, and
what each row's answer means.

A row is delivered when Segment answered 2xx for every one of its messages. A 400 or 413
for a batch is split in halves until the refused message is alone (the others go out); a
retryable failure is the destination's (its circuit breaker hears of it), and what could
not be posted in time goes back untried.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from drift_segment_source import metrics
from drift_segment_source.clock import Clock
from drift_segment_source.deadlines import TookTooLong, call_within
from drift_segment_source.destinations.segment import SegmentError, Transport, batches
from drift_segment_source.routing import Destination
from drift_segment_source.store.store import Failure

from .breakers import Breakers, segment_key
from .outcomes import NotTried, Outcomes
from .rows import Prepared

log = logging.getLogger("drift_segment_source.delivery")


def breaker_of(destination: Destination) -> str:
    """The breaker of a Segment destination that is posted to (it has a write key)."""
    assert destination.write_key is not None
    return segment_key(destination.host, destination.write_key)


def segment_parked(destination: Destination) -> str:
    """The reason (for people) a row waits behind the destination's open circuit."""
    return f"waiting for Segment: {destination.host} is not answering (circuit open)"


@dataclass(frozen=True)
class Deadlines:
    """When a job's posts must stop starting (``start_by``) and ending (``end_by``), in
    monotonic seconds: both inside the lease of the job's rows."""

    start_by: float
    end_by: float


class Poster:
    """Posts rows to their Segment destination, filing each row's outcome."""

    def __init__(self, transport: Transport, breakers: Breakers, clock: Clock,
                 stopping: threading.Event) -> None:
        self.transport = transport
        self.breakers = breakers
        self.clock = clock
        self.stopping = stopping

    def post_rows(self, destination: Destination, rows: list[Prepared], outcomes: Outcomes,
                  deadlines: Deadlines) -> None:
        """Post the rows' messages in batches; a row is delivered when all of its are."""
        messages: list[dict[str, Any]] = []
        row_of: list[int] = []
        for position, prepared in enumerate(rows):
            messages.extend(prepared.messages)
            row_of.extend([position] * len(prepared.messages))
        failed: dict[int, Exception] = {}
        not_tried: set[int] = set()
        parked: set[int] = set()
        outage: SegmentError | None = None
        breaker = breaker_of(destination)
        orgs = {prepared.row.org_id for prepared in rows}
        for batch in self.probe_first(breaker, list(batches(messages)), row_of):
            if outage is not None or not self.breakers.allows(breaker, orgs):
                if self.breakers.is_open(breaker):
                    # Segment is down: its rows wait for the probe, spending no attempt.
                    parked.update(row_of[i] for i in batch)
                else:
                    failed.update({row_of[i]: outage or SegmentError(None, "")
                                   for i in batch})
                continue
            if self.stopping.is_set() or self.clock.monotonic() > deadlines.start_by:
                not_tried.update(row_of[i] for i in batch)
                self.breakers.not_probed(breaker)
                continue
            answered, hung = True, False
            for index, error in self.post_isolating(destination, messages, batch, deadlines):
                failed.setdefault(row_of[index], error)
                if isinstance(error, SegmentError) and error.retryable:
                    outage, answered = error, False
                    hung = hung or error.timed_out
            if answered:
                self.breakers.succeeded(breaker, after_parked=any(
                    rows[row_of[index]].row.was_parked for index in batch))
            else:
                self.breakers.failed(breaker, orgs, hung=hung)
        self.file(destination, rows, outcomes, failed, not_tried, parked)

    def file(self, destination: Destination, rows: list[Prepared], outcomes: Outcomes,
             failed: dict[int, Exception], not_tried: set[int], parked: set[int]) -> None:
        """Each row under its outcome, from what happened to its messages."""
        breaker = breaker_of(destination)
        circuit_open = self.breakers.is_open(breaker)
        now = self.clock.wall()
        for position, prepared in enumerate(rows):
            refusal = failed.get(position)
            if circuit_open and isinstance(refusal, SegmentError) and refusal.retryable:
                # Tried (the probe, or the batch that opened the circuit), but the outage is
                # the destination's: the row waits for the next probe like the others.
                parked.add(position)
                refusal = None
            if position in parked and refusal is None:
                keep_for_probe = not outcomes.parked
                outcomes.parked.append(Failure(
                    prepared.row.id, segment_parked(destination),
                    self.breakers.park_seconds(breaker, keep_for_probe), breaker))
            elif isinstance(refusal, NotTried) or (refusal is None and position in not_tried):
                outcomes.deferred.append(Failure(prepared.row.id, "round ended before posting"))
            elif refusal is not None:
                outcomes.file(prepared.row.id, refusal, breaker)
            else:
                outcomes.delivered.append(prepared.row.id)
                if prepared.link is not None:
                    outcomes.links_sent.append(prepared.link[0])
                metrics.DELIVERY_LATENCY.observe(max(0.0, now - prepared.row.received_at))

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

    def post_isolating(self, destination: Destination, messages: list[dict[str, Any]],
                       batch: list[int], deadlines: Deadlines) -> list[tuple[int, Exception]]:
        """Post a batch; on 400/413 (or an error raised while posting it) split it to find
        the messages at fault. The indexes that failed, with why."""
        assert destination.write_key is not None
        write_key, host = destination.write_key, destination.host
        # The posts that open a circuit are warnings; a failed probe of one already open is
        # not news (the surfaces show the open circuit), and comes every few seconds.
        level = logging.DEBUG if self.breakers.is_open(breaker_of(destination)) else logging.WARNING
        try:
            # A wall-clock limit on the whole post: requests' timeout bounds each read, and
            # an answer can trickle in a byte at a time.
            call_within(deadlines.end_by - self.clock.monotonic(), lambda: self.transport.post(
                write_key, host, [messages[i] for i in batch]))
        except TookTooLong as error:
            metrics.SEGMENT_BATCHES.labels(status="network").inc()
            log.log(level, "segment post failed", extra={
                "host": host, "error_kind": "timeout", "status": None, "messages": len(batch)})
            return [(index, SegmentError(None, str(error), timed_out=True, kind="timeout"))
                    for index in batch]
        except SegmentError as error:
            metrics.SEGMENT_BATCHES.labels(status=str(error.status or "network")).inc()
            if error.status in (400, 413) and len(batch) > 1:
                return self.split(destination, messages, batch, deadlines, error)
            log.log(level, "segment post failed", extra={
                "host": host, "error_kind": error.kind, "status": error.status,
                "error": error.message[:200], "messages": len(batch)})
            return [(index, error) for index in batch]
        except Exception as error:
            # Nobody expected this (the transport should raise SegmentError): split the
            # batch so the others go out, and retry the message that raises, never drop it.
            log.warning("posting a batch raised", extra={"host": host,
                                                          "error": repr(error)[:300],
                                                          "messages": len(batch)})
            if len(batch) > 1:
                return self.split(destination, messages, batch, deadlines, error)
            return [(batch[0], SegmentError(None, f"posting raised {error!r}"[:300],
                                            kind="network"))]
        metrics.SEGMENT_BATCHES.labels(status="2xx").inc()
        metrics.SEGMENT_MESSAGES.inc(len(batch))
        return []

    def split(self, destination: Destination, messages: list[dict[str, Any]], batch: list[int],
              deadlines: Deadlines, error: Exception) -> list[tuple[int, Exception]]:
        """Post each half of a refused batch on its own (unless the job is out of time)."""
        if self.clock.monotonic() > deadlines.start_by or self.stopping.is_set():
            # Which message Segment refused is unknown: none may be dead-lettered for it.
            return [(index, NotTried(str(error))) for index in batch]
        middle = len(batch) // 2
        return (self.post_isolating(destination, messages, batch[:middle], deadlines)
                + self.post_isolating(destination, messages, batch[middle:], deadlines))
