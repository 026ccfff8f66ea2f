"""What the delivery loop does beside delivering: retention, SQLite checkpoints, due times
that a clock step left in the future, and garbage-collector tuning.

Intervals are measured on the monotonic clock; cut-offs are taken from the store's
``trusted_now`` (never ahead of what the store has seen, nor of the database's clock), so a
host clock that jumps ahead deletes nothing early (see docs/reliability.md, "Time").
"""

from __future__ import annotations

import gc
import logging

from drift_segment_source import metrics
from drift_segment_source.clock import Clock
from drift_segment_source.routing import NO_WRITE_KEY
from drift_segment_source.store.store import Store

from .settings import DeliverySettings, RetentionSettings

log = logging.getLogger("drift_segment_source.delivery")

# How often the loop copies SQLite's write-ahead log into the database (Store.checkpoint).
CHECKPOINT_EVERY_SECONDS = 1.0
# How often rows due impossibly far ahead (written while the clock was ahead) are made due.
FUTURE_DUE_CHECK_EVERY_SECONDS = 30.0
# Allocations between two young-generation collections (CPython's default: 700). A delivery
# round allocates a few dozen dicts and lists per row, nearly all freed by reference counting,
# yet the default threshold ran a collection every few rows: 7% of delivery's CPU.
GC_YOUNG_THRESHOLD = 20_000
# How often a process with a write key releases rows held for want of one.
RELEASE_EVERY_SECONDS = 10.0
# The longest a probe waits (breakers.HUNG_PROBE_MAX_SECONDS) bounds a parked row's wait.
LONGEST_PROBE_WAIT_SECONDS = 60.0


def tune_gc() -> None:
    """Collect garbage less often, and never scan what start-up created (modules, settings):
    it lives as long as the process."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class Housekeeping:
    """Runs each chore when its interval has passed; called between delivery rounds."""

    def __init__(self, store: Store, clock: Clock, delivery: DeliverySettings,
                 retention: RetentionSettings) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery
        self.retention = retention
        # The first retention pass waits one interval: a process started while the host
        # clock is wrong deletes nothing before the clock had time to be set right.
        self._last: dict[str, float] = {"prune": clock.monotonic()}
        self._steps_seen = getattr(clock, "steps_adopted", 0)
        # Set by a self-hosted process with a write key: rows another process held for want
        # of one (a restart without it, still running beside this one) are released.
        self.release_for_write_key = False

    def due(self, chore: str, every: float) -> bool:
        """Whether ``chore`` last ran ``every`` seconds ago or more (and mark it run)."""
        now = self.clock.monotonic()
        last = self._last.get(chore)
        if last is not None and now - last < every:
            return False
        self._last[chore] = now
        return True

    def now_and_then(self) -> None:
        """Every chore whose time has come."""
        self.follow_clock_steps()
        if self.due("future_due", FUTURE_DUE_CHECK_EVERY_SECONDS):
            self.make_future_rows_due()
        if self.due("prune", self.retention.interval_seconds):
            self.prune()
        if self.due("checkpoint", CHECKPOINT_EVERY_SECONDS):
            self.store.checkpoint()
        if self.release_for_write_key and self.due("release", RELEASE_EVERY_SECONDS):
            self.release_held_for_write_key()

    def follow_clock_steps(self) -> None:
        """When the clock believes a step of the host clock back, rows scheduled before it
        are moved back as much, so none waits for the size of the step. (Each process moves
        them when its own clock believes the step: a row is at worst tried early.)"""
        adopted = getattr(self.clock, "steps_adopted", 0)
        if adopted == self._steps_seen:
            return
        self._steps_seen = adopted
        step = float(getattr(self.clock, "last_adopted_step", 0.0))
        if step < 0:
            moved = self.store.shift_waits(step)
            log.warning("rows scheduled before the clock stepped back are due as much sooner",
                        extra={"step_seconds": round(step, 3), "count": moved})

    def make_future_rows_due(self) -> None:
        """Rows due further ahead than any wait the engine sets are due now: the clock that
        scheduled them was ahead, and has stepped back."""
        longest = max(self.delivery.backoff_max_seconds, self.delivery.lookup_limit_seconds,
                      LONGEST_PROBE_WAIT_SECONDS)
        made_due = self.store.make_due_from_the_future(longest)
        if made_due:
            log.warning("rows were due in the future after a clock step; due now",
                        extra={"count": made_due})

    def prune(self) -> None:
        """Apply every retention, each counted and logged before anything goes."""
        now = self.store.trusted_now()
        if now < self.clock.wall() - 60:
            log.warning("retention counts from the store's newest event, not the clock, which "
                        "is ahead of it", extra={"trusted": now, "clock": self.clock.wall()})
        self.expire_held(now)
        for what, days, prune in (
                ("dead", self.retention.dead_letter_days, self.store.prune_dead),
                ("quarantine", self.retention.quarantine_days, self.store.prune_quarantine)):
            before = now - days * 86400
            going = self.store.count_older(what, before)
            if not going:
                continue
            log.warning("deleting rows past their retention", extra={
                "what": what, "count": going, "retention_days": days})
            metrics.DROPPED.labels(what="dead_letter" if what == "dead" else "quarantined"
                                   ).inc(prune(before))
        pruned = self.store.prune(now - self.retention.delivered_days * 86400)
        metrics.DROPPED.labels(what="delivered").inc(pruned)
        forgotten = self.store.prune_dedupe_keys(now - self.retention.dedupe_days * 86400)
        metrics.DROPPED.labels(what="dedupe_key").inc(forgotten)
        if forgotten:
            log.info("pruned dedupe keys", extra={"count": forgotten})
        # The planner needs fresh statistics of a table that churns this much (PostgreSQL
        # chose full scans for claims on a never-analysed table).
        self.store.analyze()
        if pruned:
            log.info("pruned delivered webhooks", extra={"count": pruned})

    def release_held_for_write_key(self) -> None:
        """Rows held for a write key are due: this process has one (at start, then as a
        chore while a process without one may still hold them again)."""
        released = self.store.release_held(NO_WRITE_KEY)
        if released:
            log.info("rows held for a write key are due", extra={"count": released})

    def expire_held(self, now: float) -> None:
        """Held rows past HELD_MAX_AGE_HOURS become dead letters with the reason."""
        max_age = self.retention.held_max_age_hours
        expired = self.store.expire_held(now - max_age * 3600, max_age)
        if expired:
            metrics.DROPPED.labels(what="held_expired").inc(expired)
            metrics.DELIVERIES.labels(outcome="dead").inc(expired)
            log.warning("held rows became dead letters", extra={
                "count": expired, "held_max_age_hours": max_age})
