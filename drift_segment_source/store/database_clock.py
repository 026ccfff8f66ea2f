"""PostgreSQL's clock as the service's wall clock: the one clock every process and host shares.

Leases, due times and receipt times are compared across processes, which on PostgreSQL may run
on several hosts whose clocks disagree (or one of which steps). So on PostgreSQL the wall time
is the host's, corrected by how far it is from the database's own clock, measured once a
minute (a measure that fails keeps the last one). Durations stay on the host's monotonic clock.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import text
from sqlalchemy.engine import Engine

from drift_segment_source.clock import Clock

log = logging.getLogger("drift_segment_source.clock")

MEASURE_EVERY_SECONDS = 60.0
DATABASE_NOW = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"


class DatabaseClock:
    """``base``'s wall time, set to the database's clock; its monotonic time and waits."""

    def __init__(self, base: Clock, engine: Engine) -> None:
        self._base = base
        self._engine = engine
        self._offset = 0.0
        self._measured_at = float("-inf")
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._base.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return self._base.wait(event, seconds)

    def wall(self) -> float:
        now = self._base.monotonic()
        if now - self._measured_at >= MEASURE_EVERY_SECONDS:
            self._measure(now)
        return self._base.wall() + self._offset

    def _measure(self, now: float) -> None:
        """How far the database's clock is from this host's (half the round trip aside)."""
        with self._lock:
            if now - self._measured_at < MEASURE_EVERY_SECONDS:
                return
            self._measured_at = now
            try:
                with self._engine.connect() as connection:
                    before = self._base.wall()
                    database = float(connection.execute(text(DATABASE_NOW)).scalar_one())
                    after = self._base.wall()
            except Exception as error:  # the store is down: keep the last measure
                log.debug("could not read the database's clock",
                          extra={"error": type(error).__name__})
                return
            offset = database - (before + after) / 2
            if abs(offset - self._offset) > 1.0:
                log.warning("this host's clock differs from the database's; the service "
                            "keeps the database's time", extra={"seconds": round(offset, 3)})
            self._offset = offset
