"""Webhooks refused for a wrong or missing token, counted per minute and reason.

A rotated Drift verification token makes every webhook a 401: the service is up, nothing
arrives, and only a metric knew. Refusals are counted here so every health surface can say
"refused in the last hour", and logged at WARNING, one line per reason per interval with the
count, so a flood of bad requests cannot fill the log.

Counts are added up in memory (per process) and written at most every FLUSH_SECONDS, one
transaction for all of them, from a timer thread: a flood costs a few writes, and a refused
request never waits for (or fails on) the store.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from .db import refused_webhooks

log = logging.getLogger("drift_segment_source.refusals")

FLUSH_SECONDS = 2.0
# Rows older than this are deleted as counts are written: the surfaces look back an hour.
KEEP_MINUTES = 24 * 60
# Counts the store would not take are kept this long, then given up (said in the log).
UNWRITTEN_MINUTES = 60

# The fixed vocabulary of ``refused_webhooks.reason``, with what the log and the surfaces say.
DRIFT_MISSING = "drift_missing_token"
DRIFT_WRONG = "drift_wrong_token"
SEGMENT_MISSING = "segment_missing_signature"
SEGMENT_WRONG = "segment_wrong_signature"
SEGMENT_STALE = "segment_stale_batch"
WHAT_HAPPENED = {
    DRIFT_WRONG: ("Drift", "a wrong verification token"),
    DRIFT_MISSING: ("Drift", "a missing verification token"),
    SEGMENT_WRONG: ("Segment", "a wrong signature"),
    SEGMENT_MISSING: ("Segment", "a missing signature"),
    SEGMENT_STALE: ("Segment", "a batch signed over an element too old to trust"),
}


def refused(number: int, reason: str) -> str:
    """``40 Drift webhooks refused for a wrong verification token``."""
    door, why = WHAT_HAPPENED.get(reason, ("", reason))
    noun = "webhook" if number == 1 else "webhooks"
    return f"{number} {door + ' ' if door else ''}{noun} refused for {why}"


Clock = Callable[[], float]


def minute_of(epoch: float) -> int:
    """The epoch minute a time falls in."""
    return int(epoch // 60)


class Refusals:
    """This process's refusal counts, written to ``refused_webhooks`` every few seconds."""

    def __init__(self, engine: Engine, clock: Clock = time.time,
                 flush_seconds: float = FLUSH_SECONDS) -> None:
        self.engine = engine
        self.clock = clock
        self.flush_seconds = flush_seconds
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._pending: dict[tuple[int, str], int] = {}
        self._unwritten: dict[tuple[int, str], int] = {}  # logged, but the store was down
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._flushing = threading.Lock()
        self._exit_hook = False

    def count(self, reason: str) -> None:
        """One more request refused for ``reason``; written within ``flush_seconds``."""
        with self._lock:
            key = (minute_of(self.clock()), reason)
            self._pending[key] = self._pending.get(key, 0) + 1
            if self._timer is None:
                self._schedule()

    def _schedule(self) -> None:
        """Start the timer that writes the counts (the caller holds the lock)."""
        if not self._exit_hook:
            # Registered by the first refusal, in the process that takes requests (never the
            # gunicorn master): what is counted when it exits is written too.
            atexit.register(self.flush)
            self._exit_hook = True
        self._timer = threading.Timer(self.flush_seconds, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        """Write the counts kept since the last flush, and log them, one line per reason."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
                unwritten, self._unwritten = self._unwritten, {}
                self._timer = None
            if not pending and not unwritten:
                return
            by_reason: dict[str, int] = {}
            for (_, reason), number in pending.items():
                by_reason[reason] = by_reason.get(reason, 0) + number
            for reason, number in sorted(by_reason.items()):
                log.warning("%s in the last %g s", refused(number, reason), self.flush_seconds,
                            extra={"reason": reason, "refused": number})
            for key, number in pending.items():
                unwritten[key] = unwritten.get(key, 0) + number
            try:
                self._write(unwritten)
            except Exception as error:  # the store is down: keep the counts, try again
                self._keep(unwritten, error)

    def _write(self, pending: dict[tuple[int, str], int]) -> None:
        """Add the counts to their rows, and drop rows past KEEP_MINUTES, in one commit."""
        insert = self._insert(refused_webhooks).values(
            [{"minute": minute, "reason": reason, "count": number}
             for (minute, reason), number in sorted(pending.items())])
        upsert = insert.on_conflict_do_update(
            index_elements=["minute", "reason"],
            set_={"count": refused_webhooks.c.count + insert.excluded.count})
        now = minute_of(self.clock())
        with self.engine.begin() as connection:
            connection.execute(upsert)
            connection.execute(delete(refused_webhooks).where(or_(
                refused_webhooks.c.minute < now - KEEP_MINUTES,
                refused_webhooks.c.minute > now + KEEP_MINUTES)))

    def _keep(self, unwritten: dict[tuple[int, str], int], error: Exception) -> None:
        """Keep the unwritten counts (those under an hour old) and try again later."""
        oldest = minute_of(self.clock()) - UNWRITTEN_MINUTES
        kept = {key: number for key, number in unwritten.items() if key[0] >= oldest}
        if len(kept) < len(unwritten):
            log.warning("refusal counts older than an hour dropped: the store did not take "
                        "them", extra={"error": type(error).__name__})
        with self._lock:
            self._unwritten = kept
            if kept and self._timer is None:
                self._schedule()

    def last_hour(self) -> dict[str, int]:
        """Refusals by reason over the last 60 minutes, as written by every process."""
        now = minute_of(self.clock())
        # Minutes ahead of now were counted by a clock that was ahead: not "the last hour".
        statement = (select(refused_webhooks.c.reason, func.sum(refused_webhooks.c.count))
                     .where(refused_webhooks.c.minute.between(now - 59, now))
                     .group_by(refused_webhooks.c.reason))
        with self.engine.connect() as connection:
            return {str(reason): int(number) for reason, number in connection.execute(statement)}
