"""What every part of the store shares: the engine, the clock and the write transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from drift_segment_source.clock import SYSTEM_CLOCK, Clock

from .commits import WriteLock

# Retention and other bulk changes touch this many rows per transaction: each holds the
# write lock (which webhooks wait for) about as long as one ordinary commit.
ROWS_PER_COMMIT = 1000


class StoreBase:
    """An engine, the clock stored times are read from, and writes taken in turn."""

    def __init__(self, engine: Engine, clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._write_lock = WriteLock.for_engine(engine)

    def now(self) -> float:
        """The wall-clock time stored times are written in (epoch seconds)."""
        return self.clock.wall()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction, taken in turn with this database's other writers."""
        with self._write_lock.held(), self.engine.begin() as connection:
            yield connection

    def _in_chunks(self, statement: Any) -> int:
        """Run a statement that changes at most ROWS_PER_COMMIT rows, one transaction at a
        time, until it changes fewer; the rows changed."""
        total = 0
        while True:
            with self._writing() as connection:
                changed = connection.execute(statement).rowcount
            total += changed
            if changed < ROWS_PER_COMMIT:
                return total
