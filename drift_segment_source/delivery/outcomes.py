"""What became of each claimed row, the retry policy, and writing both to the store.

Every row of a round ends under exactly one outcome (delivered, dry-run, dead, retried,
held, parked, deferred, waiting for a lookup); ``record`` writes a set of outcomes in one
transaction, each row's ``wait_reason`` from the fixed vocabulary of store/db.py. The
retry policy is pure: attempts and Retry-After in, the delay (or "give up") out.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from drift_segment_source import metrics
from drift_segment_source.clock import Clock
from drift_segment_source.destinations.segment import MessageTooLarge, SegmentError
from drift_segment_source.drift_api import DriftApiError
from drift_segment_source.routing import Held
from drift_segment_source.sources.drift.translators import NoContact
from drift_segment_source.store.store import Failure, Store

log = logging.getLogger("drift_segment_source.delivery")

# When a row that was not tried this round is due again.
DEFER_SECONDS = 0.5


class NotTried(Exception):
    """A message the round had no time (or leave) to post: its row goes back untried."""


class Parked(Exception):
    """The row's destination has an open circuit: it waits ``seconds`` for the probe."""

    def __init__(self, reason: str, destination: str, seconds: float) -> None:
        super().__init__(reason)
        self.destination = destination
        self.seconds = seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter under a ceiling, and when to give up."""

    base_seconds: float
    ceiling_seconds: float
    max_attempts: int

    def exhausted(self, attempts: int) -> bool:
        """Whether a row that failed its ``attempts``-th attempt goes to the dead letters."""
        return attempts >= self.max_attempts

    def delay(self, attempts: int, retry_after: float | None,
              draw: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds until the next attempt: jittered, not sooner than Retry-After, which is
        itself capped by the ceiling (Drift's has no bound)."""
        base, ceiling = self.base_seconds, self.ceiling_seconds
        jittered = draw(base / 2, min(ceiling, base * 2 ** (attempts - 1)))
        return min(ceiling, max(jittered, retry_after or 0))


@dataclass
class Outcomes:
    """What happened to each row of one round (or one lane's job)."""

    attempts: dict[int, int] = field(default_factory=dict)
    # When each row last entered delivery (its age counts from there).
    queued: dict[int, float] = field(default_factory=dict)
    delivered: list[int] = field(default_factory=list)
    dry_run: list[int] = field(default_factory=list)
    dead: list[Failure] = field(default_factory=list)
    retry: list[Failure] = field(default_factory=list)
    held: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))
    # Not tried (the round ran out of time, the loop is stopping, the lookup queue was full):
    # back to the store, due again soon, without spending an attempt.
    deferred: list[Failure] = field(default_factory=list)
    # Their lookup still runs: made due when it ends, or after the longest a lookup can take.
    awaiting_lookup: list[Failure] = field(default_factory=list)
    # Their destination's circuit is open: back untried until its next probe.
    parked: list[Failure] = field(default_factory=list)
    # Keys of the linking identifies Segment confirmed (identity stitching).
    links_sent: list[bytes] = field(default_factory=list)

    def for_rows(self, row_ids: list[int]) -> Outcomes:
        """Empty outcomes for some of these rows (a lane's job), with their attempts."""
        return Outcomes(attempts={row_id: self.attempts.get(row_id, 0) for row_id in row_ids},
                        queued={row_id: self.queued[row_id] for row_id in row_ids
                                if row_id in self.queued})

    def file(self, row_id: int, error: Exception, destination: str | None = None) -> None:
        """File a row under what ``error`` means for it; nothing else is affected."""
        if isinstance(error, Held):
            self.held[error.reason].append(Failure(row_id, str(error)))
        elif isinstance(error, Parked):
            self.parked.append(Failure(row_id, str(error), error.seconds, error.destination))
        elif isinstance(error, DriftApiError | SegmentError) and error.retryable:
            self.retry.append(Failure(row_id, str(error), error.retry_after, destination))
        elif isinstance(error, DriftApiError | SegmentError | MessageTooLarge | NoContact):
            self.dead.append(Failure(row_id, str(error)))
        else:
            # A translator or the Segment library raised what nobody expected: the row is
            # kept as a dead letter with the reason, to replay after a fix.
            self.dead.append(Failure(row_id, f"cannot translate: {error!r}"[:500]))

    def merge(self, other: Outcomes) -> None:
        """Add what ``other`` holds to these outcomes."""
        for name in (each.name for each in fields(self)):
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif name == "held":  # lists of failures by hold reason
                for reason, failures in theirs.items():
                    mine[reason] += failures
            else:  # attempts and queue times, by row
                mine.update(theirs)

    def empty(self) -> bool:
        """Whether no row has an outcome here."""
        return not any(getattr(self, each.name) for each in fields(self)
                       if each.name not in ("attempts", "queued"))


class Recorder:
    """Writes outcomes to the store for one delivery loop (thread-safe: the store is)."""

    def __init__(self, store: Store, owner: str, policy: RetryPolicy, clock: Clock,
                 lookup_wait: float, max_age_seconds: float = float("inf")) -> None:
        self.store = store
        self.owner = owner
        self.policy = policy
        self.clock = clock
        # A row waiting for a lookup is due after this even if nobody makes it due (the
        # lookup may start as late as one limit after it was queued, and runs one limit).
        self.lookup_wait = lookup_wait
        self.max_age_seconds = max_age_seconds

    def record(self, outcomes: Outcomes) -> None:
        """Write every row's outcome to the store and count it."""
        if outcomes.empty():
            return
        now = self.clock.wall()
        exhausted, retry, parked = self.split_exhausted(outcomes, now)
        self.store.record(
            self.owner,
            delivered=outcomes.delivered,
            dry_run=outcomes.dry_run,
            dead=outcomes.dead + exhausted,
            held=outcomes.held,
            retry=self.schedule(retry, outcomes.attempts),
            deferred={now + DEFER_SECONDS: outcomes.deferred},
            awaiting_lookup={now + self.lookup_wait: outcomes.awaiting_lookup},
            parked=parked,
            remember=outcomes.links_sent,
        )
        counts = {"delivered": len(outcomes.delivered), "dry_run": len(outcomes.dry_run),
                  "dead": len(outcomes.dead) + len(exhausted), "retried": len(retry),
                  "held": sum(len(failures) for failures in outcomes.held.values()),
                  "deferred": len(outcomes.deferred) + len(outcomes.awaiting_lookup),
                  "parked": len(parked)}
        for outcome, number in counts.items():
            if number:
                metrics.DELIVERIES.labels(outcome=outcome).inc(number)
        for failure in outcomes.dead + exhausted:
            log.warning("dead-lettered", extra={"webhook_id": failure.id,
                                                "reason": failure.reason})
        # A round that only sent rows back to wait (an outage: one every few seconds) is not
        # worth a line at INFO; the open circuit is on every surface.
        busy = any(counts[outcome] for outcome in ("delivered", "dry_run", "dead", "retried",
                                                   "held"))
        log.log(logging.INFO if busy else logging.DEBUG, "delivery round",
                extra={"owner": self.owner, **counts})

    def split_exhausted(self, outcomes: Outcomes, now: float
                        ) -> tuple[list[Failure], list[Failure], list[Failure]]:
        """Rows that still wait after a failure or behind a circuit: those out of attempts
        or past the age limit go to the dead letters; the others are retried or stay
        parked. A row that can be delivered is, however old: only waiting ages it out."""
        exhausted, retry, parked = [], [], []
        for failure in outcomes.retry:
            if self.policy.exhausted(outcomes.attempts[failure.id]):
                exhausted.append(Failure(
                    failure.id, f"gave up after {self.policy.max_attempts} attempts: "
                                f"{failure.reason}"))
            elif self.too_old(outcomes, failure, now):
                exhausted.append(self.aged_out(failure))
            else:
                retry.append(failure)
        for failure in outcomes.parked:
            if self.too_old(outcomes, failure, now):
                exhausted.append(self.aged_out(failure))
            else:
                parked.append(failure)
        return exhausted, retry, parked

    def too_old(self, outcomes: Outcomes, failure: Failure, now: float) -> bool:
        """Whether the row has waited for delivery longer than DELIVERY_MAX_AGE_HOURS."""
        queued = outcomes.queued.get(failure.id)
        return queued is not None and now - queued > self.max_age_seconds

    def aged_out(self, failure: Failure) -> Failure:
        """The dead letter of a row past the age limit, with the last reason it waited."""
        return Failure(failure.id, f"undelivered after {self.max_age_seconds / 3600:g} hours: "
                                   f"{failure.reason}")

    def schedule(self, retry: list[Failure], attempts: dict[int, int]
                 ) -> dict[float, list[Failure]]:
        """When each row is tried again: by its own attempts and Retry-After, so that one
        row's long wait is never every row's (one jittered delay per group, one UPDATE)."""
        groups: dict[tuple[int, float | None], list[Failure]] = defaultdict(list)
        for failure in retry:
            groups[(attempts[failure.id], failure.retry_after)].append(failure)
        now = self.clock.wall()
        # Groups can fall on one time (the same Retry-After, or the ceiling): they share it,
        # or the later group would replace the earlier and its rows stay leased, unrecorded.
        scheduled: dict[float, list[Failure]] = defaultdict(list)
        for (count, retry_after), failures in groups.items():
            scheduled[now + self.policy.delay(count, retry_after)].extend(failures)
        return scheduled
