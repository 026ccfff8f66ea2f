"""The durable store: accepted webhooks, their delivery state, quarantine and leases.

Every method is one short transaction. The web side only ever calls :meth:`Store.accept`
and :meth:`Store.quarantine`; everything else belongs to delivery and operations.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import and_, delete, event, func, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError, StatementError

from .commits import GroupCommit, WebhookInserter, WriteLock
from .commits import StoreUnavailable as StoreUnavailable  # raised by Store's methods
from .commits import Unstorable as Unstorable  # raised by Store's methods
from .db import (
    IS_DEAD,
    IS_FINISHED,
    IS_HELD,
    IS_PENDING,
    dedupe_keys,
    leases,
    quarantine,
    watermarks,
    webhooks,
)

Clock = Callable[[], float]

DEDUPE_HORIZON = "dedupe_horizon"
# Retention deletes this many rows per transaction: each holds the write lock (which
# webhooks wait for) about as long as one ordinary commit, never the length of a big prune.
PRUNE_ROWS_PER_COMMIT = 1000
# SQLite: the write-ahead log is copied into the database by Store.checkpoint, which the
# delivery loop calls outside the write lock. A commit copies it itself only past this many
# pages (about 40 MB), when no delivery loop runs: SQLite's default (1,000 pages) made every
# few hundredth commit, a webhook's or a delivery round's, pay for a checkpoint and its fsync.
WAL_AUTOCHECKPOINT_PAGES = 10_000
# The rows ANALYZE (run by PRAGMA optimize) reads per index on SQLite: statistics good
# enough for the planner in milliseconds, where a full ANALYZE of a million rows holds the
# write lock for seconds.
SQLITE_ANALYSIS_LIMIT = 1000
# How long a process trusts the dedupe horizon it read. Keys are deleted only in the prune
# after the one that announced the new horizon (PRUNE_EVERY_SECONDS later), so every
# process has read it by then.
HORIZON_CACHE_SECONDS = 60


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


@dataclass(slots=True)
class StoredWebhook:
    """A claimed row, as the delivery loop sees it."""

    id: int
    org_id: int
    event_type: str
    payload: dict[str, Any]
    received_at: float
    queued_at: float
    attempts: int


@dataclass(frozen=True)
class Failure:
    """A row that did not get delivered this time, and why (and, when the service that
    failed said so, how many seconds to wait before trying again)."""

    id: int
    reason: str
    retry_after: float | None = None


def by_reason(failures: Iterable[Failure]) -> dict[str, list[int]]:
    """Row ids grouped by their reason (a Segment outage gives every row the same one)."""
    grouped: dict[str, list[int]] = {}
    for failure in failures:
        grouped.setdefault(failure.reason, []).append(failure.id)
    return grouped


class Store:
    """Reads and writes of the service's tables, on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, clock: Clock = time.time) -> None:
        self.engine = engine
        self.clock = clock
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._write_lock = WriteLock.for_engine(engine)
        self._inserter = WebhookInserter(engine, self._write_lock)
        self._group_commit = GroupCommit(self._inserter.insert, self._write_lock.held)
        self._horizon: tuple[float, float] | None = None  # (value, read at)
        if dialect == "sqlite":
            event.listen(engine, "connect", _defer_checkpoints)

    def close(self) -> None:
        """Return every connection (the inserter's kept one included)."""
        self._inserter.close()
        self.engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction, taken in turn with this database's other writers."""
        with self._write_lock.held(), self.engine.begin() as connection:
            yield connection

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or update the schema to the newest Alembic revision."""
        config = Config()
        config.set_main_option("script_location", "drift_segment_source.store:migrations")
        with self._writing() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        self.analyze()

    def analyze(self) -> None:
        """Refresh the query planner's statistics of the webhooks table."""
        with self._writing() as connection:
            if self.engine.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE webhooks")
            else:
                connection.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
                connection.exec_driver_sql("PRAGMA optimize")

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file. PASSIVE, and outside the
        write lock: writers go on appending meanwhile, so no webhook waits for it."""
        if self.engine.dialect.name != "sqlite":
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
    ) -> int | None:
        """Store a webhook durably; its id, or None when this Drift event is already stored.

        Returns only after the commit. Concurrent calls share one commit (see GroupCommit).
        Raises StoreUnavailable (try again later) or Unstorable (these values never fit).
        """
        now = self.clock()
        row = (org_id, event_type, dedupe_key, payload, received_at, now,
               "held" if hold_reason else "pending", hold_reason, 0, now)
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
                        received_at=self.clock(),
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

    # -- delivery ---------------------------------------------------------------------------

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[StoredWebhook]:
        """Lease up to ``limit`` due rows to ``owner``; concurrent claimers skip each other.

        The attempt is counted at claim time, so a row that crashes its worker every time
        still runs out of attempts and reaches the dead letters.
        """
        now = self.clock()
        due = (
            select(webhooks.c.id)
            .where(
                IS_PENDING,
                webhooks.c.next_attempt_at <= now,
                or_(webhooks.c.lease_expires_at.is_(None), webhooks.c.lease_expires_at < now),
            )
            .order_by(webhooks.c.next_attempt_at, webhooks.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(webhooks)
            .where(webhooks.c.id.in_(due.scalar_subquery()))
            .values(
                lease_owner=owner,
                lease_expires_at=now + lease_seconds,
                attempts=webhooks.c.attempts + 1,
            )
            .returning(
                webhooks.c.id,
                webhooks.c.org_id,
                webhooks.c.event_type,
                webhooks.c.payload,
                webhooks.c.received_at,
                webhooks.c.queued_at,
                webhooks.c.attempts,
            )
        )
        with self._writing() as connection:
            rows = connection.execute(statement).all()
        loads = json.loads
        claimed = [
            StoredWebhook(row_id, org_id, event_type, loads(payload), received_at, queued_at,
                          attempts)
            for row_id, org_id, event_type, payload, received_at, queued_at, attempts in rows
        ]
        claimed.sort(key=lambda row: row.id)
        return claimed

    def record(
        self,
        owner: str,
        *,
        delivered: Sequence[int] = (),
        dry_run: Sequence[int] = (),
        dead: Iterable[Failure] = (),
        held: Mapping[str, Iterable[Failure]] | None = None,
        retry: Mapping[float, Iterable[Failure]] | None = None,
        deferred: Mapping[float, Iterable[Failure]] | None = None,
        parked: Iterable[Failure] = (),
        remember: Sequence[bytes] = (),
    ) -> int:
        """Write a delivery round's outcomes in one transaction (one fsync, not one per row).

        Only rows still leased to ``owner`` change: a loop that lost its lease must not
        overwrite the work of the loop that took the rows over. ``remember`` are keys of
        messages sent once for good (linking identifies), kept with the dedupe keys.
        Returns the rows changed.
        """
        now = self.clock()
        changes: list[tuple[list[int], dict[str, Any]]] = [
            (list(delivered), {"state": "delivered", "finished_at": now, "last_error": None}),
            (list(dry_run), {"state": "dry_run", "finished_at": now}),
        ]
        for reason, ids in by_reason(dead).items():
            changes.append((ids, {"state": "dead", "finished_at": now, "last_error": reason}))
        for hold_reason, failures in (held or {}).items():
            for reason, ids in by_reason(failures).items():
                changes.append((ids, {"state": "held", "hold_reason": hold_reason,
                                      "last_error": reason}))
        for due_at, failures in (retry or {}).items():
            for reason, ids in by_reason(failures).items():
                changes.append((ids, {"next_attempt_at": due_at, "last_error": reason}))
        by_wait: dict[tuple[str, float], list[int]] = {}
        for failure in parked:
            wait = round(failure.retry_after or 0.0, 1)
            by_wait.setdefault((failure.reason, wait), []).append(failure.id)
        for (reason, wait), ids in by_wait.items():
            # Not tried either: the attempt comes back, and the reason says what it waits for.
            changes.append((ids, {"next_attempt_at": now + wait, "last_error": reason,
                                  "attempts": webhooks.c.attempts - 1}))
        for due_at, failures in (deferred or {}).items():
            # Not tried, so the attempt counted at claim time is given back.
            ids = [failure.id for failure in failures]
            changes.append((ids, {"next_attempt_at": due_at,
                                  "attempts": webhooks.c.attempts - 1}))
        changed = 0
        with self._writing() as connection:
            if remember:
                connection.execute(
                    self._insert(dedupe_keys)
                    .values([{"digest": key, "first_seen_at": now} for key in set(remember)])
                    .on_conflict_do_nothing(index_elements=["digest"]))
            for ids, values in changes:
                if ids:
                    changed += connection.execute(
                        update(webhooks)
                        .where(webhooks.c.id.in_(ids), webhooks.c.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None, **values)
                    ).rowcount
        return changed

    def known_keys(self, keys: Iterable[bytes]) -> set[bytes]:
        """Which of these dedupe keys are stored."""
        wanted = list(keys)
        if not wanted:
            return set()
        with self.engine.connect() as connection:
            return {bytes(key) for key in connection.execute(
                select(dedupe_keys.c.digest).where(dedupe_keys.c.digest.in_(wanted))).scalars()}

    def make_due_after(self, org_ids: Iterable[int], reasons: Sequence[str]) -> int:
        """Make the orgs' rows that wait for a recovered destination due now: those whose
        last error starts with one of ``reasons``."""
        orgs = list(org_ids)
        if not orgs:
            return 0
        statement = (
            update(webhooks)
            .where(IS_PENDING, webhooks.c.lease_owner.is_(None), webhooks.c.org_id.in_(orgs),
                   or_(*(webhooks.c.last_error.startswith(reason, autoescape=True)
                         for reason in reasons)))
            .values(next_attempt_at=self.clock())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def set_breaker(self, key: str, opened_at: float | None) -> None:
        """Record a destination's circuit as open since ``opened_at``, or closed (None)."""
        name = "breaker:" + key[:55]
        with self._writing() as connection:
            if opened_at is None:
                connection.execute(delete(watermarks).where(watermarks.c.name == name))
            else:
                connection.execute(
                    self._insert(watermarks).values(name=name, value=opened_at)
                    .on_conflict_do_update(index_elements=["name"], set_={"value": opened_at}))

    def open_breakers(self) -> dict[str, float]:
        """Destinations whose circuit is open, with since when (epoch seconds)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(watermarks.c.name, watermarks.c.value).where(
                watermarks.c.name.startswith("breaker:"))).all()
        return {name.removeprefix("breaker:"): float(value) for name, value in rows}

    def make_due(self, ids: Sequence[int]) -> int:
        """Make waiting rows due now (their Drift API lookup has ended)."""
        statement = (
            update(webhooks)
            .where(webhooks.c.id.in_(ids), IS_PENDING, webhooks.c.lease_owner.is_(None))
            .values(next_attempt_at=self.clock())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def mark_delivered(self, owner: str, ids: Sequence[int]) -> int:
        """Segment answered 2xx for these rows' messages."""
        return self.record(owner, delivered=ids)

    def release(self, owner: str) -> int:
        """Give every row leased to ``owner`` back, due now (used on shutdown)."""
        statement = (
            update(webhooks)
            .where(webhooks.c.lease_owner == owner, IS_PENDING)
            .values(lease_owner=None, lease_expires_at=None)
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def release_held(self, hold_reason: str, org_id: int | None = None) -> int:
        """Make held rows due again once what they waited for is there."""
        conditions = [webhooks.c.state == "held", webhooks.c.hold_reason == hold_reason]
        if org_id is not None:
            conditions.append(webhooks.c.org_id == org_id)
        statement = (
            update(webhooks)
            .where(*conditions)
            .values(state="pending", hold_reason=None, next_attempt_at=self.clock(),
                    queued_at=self.clock())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    # -- singleton lease (SQLite runs one delivery loop at a time) --------------------------

    def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the named lease; False while someone else holds it."""
        now = self.clock()
        statement = (
            self._insert(leases)
            .values(name=name, owner=owner, expires_at=now + seconds)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"owner": owner, "expires_at": now + seconds},
                where=or_(leases.c.owner == owner, leases.c.expires_at < now),
            )
        )
        with self._writing() as connection:
            connection.execute(statement)
            holder = connection.execute(
                select(leases.c.owner).where(leases.c.name == name)
            ).scalar()
        return bool(holder == owner)

    def drop_lease(self, name: str, owner: str) -> None:
        """Let the named lease go so another process can take it at once."""
        with self._writing() as connection:
            connection.execute(
                delete(leases).where(leases.c.name == name, leases.c.owner == owner)
            )

    # -- operations -------------------------------------------------------------------------

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows per (event type, state)."""
        statement = select(webhooks.c.event_type, webhooks.c.state, func.count()).group_by(
            webhooks.c.event_type, webhooks.c.state
        )
        with self.engine.connect() as connection:
            return {(row[0], row[1]): int(row[2]) for row in connection.execute(statement)}

    def waiting_counts(self) -> dict[tuple[str, str], int]:
        """Rows per (event type, state) for the states that wait: pending, held, dead.

        Each state is counted on its own partial index, so the cost follows what waits,
        never the delivered rows kept for RETENTION_DAYS (a /metrics scrape is as cheap
        with a million delivered rows as with none).
        """
        found: dict[tuple[str, str], int] = {}
        with self.engine.connect() as connection:
            for state, condition in (("pending", IS_PENDING), ("held", IS_HELD),
                                     ("dead", IS_DEAD)):
                statement = (select(webhooks.c.event_type, func.count()).where(condition)
                             .group_by(webhooks.c.event_type))
                for event_type, number in connection.execute(statement):
                    found[(event_type, state)] = int(number)
        return found

    def held_by_reason(self) -> dict[str, int]:
        """Held rows per hold reason (what each waits for)."""
        statement = (select(webhooks.c.hold_reason, func.count()).where(IS_HELD)
                     .group_by(webhooks.c.hold_reason))
        with self.engine.connect() as connection:
            return {str(reason): int(number) for reason, number in connection.execute(statement)}

    def expire_held(self, queued_before: float, max_age_hours: float) -> int:
        """Held rows queued before ``queued_before`` become dead letters with the reason."""
        now = self.clock()
        chosen = (select(webhooks.c.id).where(IS_HELD, webhooks.c.queued_at < queued_before)
                  .limit(PRUNE_ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(
            update(webhooks)
            .where(webhooks.c.id.in_(chosen), IS_HELD)
            .values(state="dead", finished_at=now,
                    last_error=literal_column(f"'held over {max_age_hours:g} hours: '")
                    + func.coalesce(webhooks.c.last_error, webhooks.c.hold_reason)))

    def _in_chunks(self, statement: Any) -> int:
        """Run a statement that changes at most PRUNE_ROWS_PER_COMMIT rows, one transaction
        at a time, until it changes fewer; the rows changed."""
        total = 0
        while True:
            with self._writing() as connection:
                changed = connection.execute(statement).rowcount
            total += changed
            if changed < PRUNE_ROWS_PER_COMMIT:
                return total

    def prune_dead(self, died_before: float) -> int:
        """Delete dead letters that died before ``died_before``."""
        chosen = (select(webhooks.c.id).where(IS_DEAD, webhooks.c.finished_at < died_before)
                  .limit(PRUNE_ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(delete(webhooks).where(webhooks.c.id.in_(chosen)))

    def prune_quarantine(self, received_before: float) -> int:
        """Delete quarantine entries received before ``received_before``."""
        chosen = (select(quarantine.c.id).where(quarantine.c.received_at < received_before)
                  .limit(PRUNE_ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(delete(quarantine).where(quarantine.c.id.in_(chosen)))

    def count_older(self, what: str, before: float) -> int:
        """How many rows a prune of ``what`` (dead, quarantine) would delete: said first."""
        statement = (
            select(func.count()).where(IS_DEAD, webhooks.c.finished_at < before)
            if what == "dead" else
            select(func.count()).select_from(quarantine).where(quarantine.c.received_at < before)
        )
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def backlog(self) -> tuple[int, float | None]:
        """How many rows wait for delivery, and the receipt time of the oldest."""
        statement = select(func.count(), func.min(webhooks.c.received_at)).where(IS_PENDING)
        with self.engine.connect() as connection:
            count, oldest = connection.execute(statement).one()
        return int(count), oldest

    def latencies(self, since: float, limit: int = 5000) -> list[float]:
        """Seconds from receipt to delivery of the rows delivered since ``since``."""
        statement = (
            select(webhooks.c.finished_at - webhooks.c.received_at)
            .where(IS_FINISHED, webhooks.c.state == literal_column("'delivered'"),
                   webhooks.c.finished_at >= since)
            .order_by(webhooks.c.finished_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [float(seconds) for seconds in connection.execute(statement).scalars()]

    def hourly(self, since: float) -> dict[str, dict[int, int]]:
        """Webhooks received and delivered per hour (epoch hour → count) since ``since``."""
        received_hour = func.floor(webhooks.c.received_at / 3600)
        finished_hour = func.floor(webhooks.c.finished_at / 3600)
        received = (select(received_hour, func.count()).where(webhooks.c.received_at >= since)
                    .group_by(received_hour))
        delivered = (select(finished_hour, func.count())
                     .where(IS_FINISHED, webhooks.c.state == literal_column("'delivered'"),
                            webhooks.c.finished_at >= since)
                     .group_by(finished_hour))
        with self.engine.connect() as connection:
            return {
                "received": {int(hour): int(n) for hour, n in connection.execute(received)},
                "delivered": {int(hour): int(n) for hour, n in connection.execute(delivered)},
            }

    def retrying(self, limit: int = 20) -> list[dict[str, Any]]:
        """Rows waiting for another attempt after a failure, the longest-waiting first."""
        statement = (
            select(webhooks.c.id, webhooks.c.org_id, webhooks.c.event_type, webhooks.c.attempts,
                   webhooks.c.received_at, webhooks.c.next_attempt_at, webhooks.c.last_error)
            .where(IS_PENDING, webhooks.c.last_error.is_not(None))
            .order_by(webhooks.c.next_attempt_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def prune(self, delivered_before: float) -> int:
        """Delete delivered (and dry-run) rows finished before ``delivered_before``."""
        chosen = (select(webhooks.c.id)
                  .where(IS_FINISHED, webhooks.c.finished_at < delivered_before)
                  .limit(PRUNE_ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(delete(webhooks).where(webhooks.c.id.in_(chosen)))

    def dedupe_horizon(self) -> float:
        """Epoch seconds before which events may have lost their dedupe keys (0: none have).

        Read on every webhook, so cached for HORIZON_CACHE_SECONDS.
        """
        now = self.clock()
        if self._horizon is not None and now - self._horizon[1] < HORIZON_CACHE_SECONDS:
            return self._horizon[0]
        with self.engine.connect() as connection:
            value = connection.execute(
                select(watermarks.c.value).where(watermarks.c.name == DEDUPE_HORIZON)
            ).scalar()
        self._horizon = (float(value or 0.0), now)
        return self._horizon[0]

    def prune_dedupe_keys(self, cutoff: float) -> int:
        """Forget dedupe keys first seen before the horizon announced last time; announce
        ``cutoff`` as the next horizon when keys older than it exist. Keys deleted.

        Announcing first and deleting a prune later means every process refuses events
        from before the horizon before their keys are gone (see HORIZON_CACHE_SECONDS).
        """
        with self.engine.connect() as connection:
            announced = connection.execute(
                select(watermarks.c.value).where(watermarks.c.name == DEDUPE_HORIZON)
            ).scalar()
        deleted = 0
        if announced:
            chosen = (select(dedupe_keys.c.digest)
                      .where(dedupe_keys.c.first_seen_at < announced)
                      .limit(PRUNE_ROWS_PER_COMMIT).scalar_subquery())
            deleted = self._in_chunks(delete(dedupe_keys).where(
                dedupe_keys.c.digest.in_(chosen)))
        with self._writing() as connection:
            older = connection.execute(
                select(dedupe_keys.c.digest).where(dedupe_keys.c.first_seen_at < cutoff).limit(1)
            ).first()
            if older is not None and cutoff > (announced or 0):
                connection.execute(
                    self._insert(watermarks)
                    .values(name=DEDUPE_HORIZON, value=cutoff)
                    .on_conflict_do_update(index_elements=["name"], set_={"value": cutoff})
                )
        return deleted

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead-lettered rows with their reasons."""
        statement = (
            select(webhooks.c.id, webhooks.c.org_id, webhooks.c.event_type, webhooks.c.attempts,
                   webhooks.c.received_at, webhooks.c.finished_at, webhooks.c.last_error)
            .where(IS_DEAD)
            .order_by(webhooks.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Send dead letters (all, or the given ids) back to delivery with fresh attempts."""
        conditions = [IS_DEAD]
        if ids:
            conditions.append(webhooks.c.id.in_(ids))
        statement = (
            update(webhooks)
            .where(and_(*conditions))
            .values(state="pending", attempts=0, next_attempt_at=self.clock(), finished_at=None,
                    queued_at=self.clock())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def purge_dead(self, ids: Sequence[int] | None = None) -> int:
        """Delete dead letters (all, or the given ids) for good."""
        conditions = [IS_DEAD]
        if ids:
            conditions.append(webhooks.c.id.in_(ids))
        with self._writing() as connection:
            return connection.execute(delete(webhooks).where(and_(*conditions))).rowcount

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """Quarantined payloads not yet released, newest first."""
        statement = (
            select(quarantine.c.id, quarantine.c.org_id, quarantine.c.event_type,
                   quarantine.c.received_at, quarantine.c.errors)
            .where(quarantine.c.released_at.is_(None))
            .order_by(quarantine.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def quarantined_payloads(
        self, ids: Sequence[int] | None = None
    ) -> list[tuple[int, str, float]]:
        """(id, raw payload, receipt time) of unreleased quarantine entries, oldest first."""
        conditions = [quarantine.c.released_at.is_(None)]
        if ids:
            conditions.append(quarantine.c.id.in_(ids))
        statement = (
            select(quarantine.c.id, quarantine.c.payload, quarantine.c.received_at)
            .where(*conditions)
            .order_by(quarantine.c.id)
        )
        with self.engine.connect() as connection:
            return [(int(row.id), row.payload, row.received_at)
                    for row in connection.execute(statement)]

    def release_quarantined(self, quarantine_id: int) -> None:
        """Mark a quarantine entry as handled (it now passes validation)."""
        with self._writing() as connection:
            connection.execute(
                update(quarantine)
                .where(quarantine.c.id == quarantine_id)
                .values(released_at=self.clock())
            )
