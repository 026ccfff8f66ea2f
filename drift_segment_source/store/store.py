"""The durable store: accepted webhooks, their delivery state, quarantine and leases.

Every method is one short transaction. The web side only ever calls :meth:`Store.accept`
and :meth:`Store.quarantine`; delivery uses ``deliveries.py``, housekeeping
``retention.py``, operators ``reads.py``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError, StatementError

from drift_segment_source.clock import SYSTEM_CLOCK, Clock

from .commits import GroupCommit, WebhookInserter
from .commits import StoreUnavailable as StoreUnavailable  # raised by Store's methods
from .commits import Unstorable as Unstorable  # raised by Store's methods
from .db import quarantine
from .deliveries import Deliveries
from .deliveries import Failure as Failure  # the delivery side's record of a failure
from .deliveries import StoredWebhook as StoredWebhook  # a claimed row
from .reads import Reads
from .retention import Retention

# SQLite: the write-ahead log is copied into the database by Store.checkpoint, which the
# delivery loop calls outside the write lock. A commit copies it itself only past this many
# pages (about 40 MB), when no delivery loop runs: SQLite's default (1,000 pages) made every
# few hundredth commit, a webhook's or a delivery round's, pay for a checkpoint and its fsync.
WAL_AUTOCHECKPOINT_PAGES = 10_000
# The rows ANALYZE (run by PRAGMA optimize) reads per index on SQLite: statistics good
# enough for the planner in milliseconds, where a full ANALYZE of a million rows holds the
# write lock for seconds.
SQLITE_ANALYSIS_LIMIT = 1000


def storage_error(error: SQLAlchemyError) -> Exception:
    """What a database error on a web-side write means: the values refused, or the store down.

    Only the error's class is kept: its text may hold the statement's parameters.
    """
    original = getattr(error, "orig", None)
    if isinstance(error, DataError | IntegrityError):
        return Unstorable(type(original).__name__)
    if isinstance(error, StatementError) and isinstance(original,
                                                        ValueError | TypeError | OverflowError):
        return Unstorable(type(original).__name__)  # the driver could not bind a value
    return StoreUnavailable(type(original or error).__name__)


def _defer_checkpoints(dbapi_connection: Any, connection_record: Any) -> None:
    # Every SQLite connection of this store: see WAL_AUTOCHECKPOINT_PAGES.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


class Store(Deliveries, Retention, Reads):
    """Reads and writes of the service's tables, on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(engine, clock)
        self._inserter = WebhookInserter(engine, self._write_lock)
        self._group_commit = GroupCommit(self._inserter.insert, self._write_lock.held)
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _defer_checkpoints)

    def close(self) -> None:
        """Return every connection (the inserter's kept one included)."""
        self._inserter.close()
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or update the schema to the newest Alembic revision.

        The migrations are told the revision the store started from and the time: one that
        cannot know what an older version pruned records a conservative horizon instead.
        """
        config = Config()
        config.set_main_option("script_location", "drift_segment_source.store:migrations")
        with self._writing() as connection:
            config.attributes["connection"] = connection
            config.attributes["starting_revision"] = MigrationContext.configure(
                connection).get_current_revision()
            config.attributes["now"] = self.now()
            command.upgrade(config, "head")
        self.analyze()

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the webhooks table."""
        with self._writing() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql("ANALYZE webhooks")
            else:
                connection.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
                connection.exec_driver_sql("PRAGMA optimize")

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file. PASSIVE, and outside the
        write lock: writers go on appending meanwhile, so no webhook waits for it."""
        if self.dialect != "sqlite":
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # -- the web side -----------------------------------------------------------------------

    def accept(
        self,
        org_id: int,
        event_type: str,
        dedupe_key: str,
        payload: str,
        received_at: float,
        hold_reason: str | None = None,
        dry_run: bool = False,
    ) -> int | None:
        """Store a webhook durably; its id, or None when this Drift event is already stored.

        Returns only after the commit. Concurrent calls share one commit (see GroupCommit).
        Raises StoreUnavailable (try again later) or Unstorable (these values never fit).
        """
        now = self.now()
        row = (org_id, event_type, dedupe_key, payload, received_at, now,
               "held" if hold_reason else "pending", hold_reason, 0, now, dry_run)
        return self._group_commit.submit(row)

    def quarantine(self, org_id: int | None, event_type: str, payload: str, errors: Any) -> int:
        """Keep a payload whose data failed its schema, with the field errors; the same
        payload again (Drift retrying a 422?) is kept once. The entry's id."""
        digest = hashlib.sha256(payload.encode("utf-8")).digest()[:16]
        try:
            with self._writing() as connection:
                inserted = connection.execute(
                    self._insert(quarantine).values(
                        org_id=org_id,
                        event_type=event_type,
                        payload=payload,
                        errors=json.dumps(errors, sort_keys=True, default=str),
                        received_at=self.now(),
                        digest=digest,
                    ).on_conflict_do_nothing(index_elements=["digest"])
                    .returning(quarantine.c.id)
                ).scalar()
                if inserted is None:
                    inserted = connection.execute(
                        select(quarantine.c.id).where(quarantine.c.digest == digest)).scalar()
        except SQLAlchemyError as error:
            raise storage_error(error) from None
        if inserted is None:  # pruned between the two statements
            raise StoreUnavailable("the quarantine entry could not be kept")
        return int(inserted)
