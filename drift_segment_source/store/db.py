"""The durable store's tables and engine: SQLite by default, PostgreSQL in production.

Times are epoch seconds (floats): they compare the same way on both databases and cost
nothing to convert. Schema changes go through Alembic (``migrations/``); the tables here are
the source the migrations follow.
"""

from __future__ import annotations

import math
import os
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    false,
    literal_column,
    text,
)
from sqlalchemy.engine import Engine, make_url

from drift_segment_source.config import normalise_database_url

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants 64 bits.
Id = BigInteger().with_variant(Integer(), "sqlite")

# Every accepted webhook, with its delivery state. ``state`` is one of
# pending (waiting for delivery), held (waiting for a missing credential, see hold_reason),
# delivered, dead (dead letter, see last_error), dry_run (logged, not sent: no write key).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("dedupe_key", String(100), nullable=False, unique=True),
    Column("payload", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    # When the row last entered delivery (accepted, or retried by an operator): the
    # maximum delivery age counts from here, while received_at stays the event's fallback time.
    Column("queued_at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("hold_reason", String(32)),
    Column("last_error", Text),
    Column("finished_at", Float),
    # Why a pending row is not delivered yet (WAIT_REASONS), and for a parked row the
    # destination (circuit key) it waits for. last_error is for people only.
    Column("wait_reason", String(16)),
    Column("waiting_on", String(100)),
    # Taken in by a process without a write key: only such a row may end as a dry run.
    Column("taken_in_dry_run", Boolean, nullable=False, server_default=false()),
)
# The fixed vocabulary of ``wait_reason``: a failed attempt waits out its backoff; a row
# whose destination's circuit is open is parked until the probe succeeds; a row whose Drift
# API lookup still runs waits for it; a row the round had no time for is deferred a moment.
WAIT_REASONS = ("backoff", "parked", "lookup", "deferred")
# "state = 'pending'" with the literal inlined, never as a bound parameter: SQLite (and a
# PostgreSQL generic plan) can only use the partial index below when the query's condition
# visibly matches the index's. With a parameter, every claim scanned the whole table.
IS_PENDING = webhooks.c.state == literal_column("'pending'")

# The delivery loop's question, "what is due?", answered from a small partial index.
Index(
    "webhooks_due",
    webhooks.c.next_attempt_at,
    webhooks.c.id,
    sqlite_where=IS_PENDING,
    postgresql_where=IS_PENDING,
)
# Retention pruning: finished rows by age.
IS_FINISHED = webhooks.c.state.in_([literal_column("'delivered'"), literal_column("'dry_run'")])
Index("webhooks_finished", webhooks.c.finished_at, sqlite_where=IS_FINISHED,
      postgresql_where=IS_FINISHED)
# Dead letters, newest first, without reading past millions of delivered rows.
IS_DEAD = webhooks.c.state == literal_column("'dead'")
Index("webhooks_dead", webhooks.c.id, sqlite_where=IS_DEAD, postgresql_where=IS_DEAD)
# Held rows by age (they become dead letters after HELD_MAX_AGE_HOURS) and by reason.
IS_HELD = webhooks.c.state == literal_column("'held'")
Index("webhooks_held", webhooks.c.queued_at, sqlite_where=IS_HELD, postgresql_where=IS_HELD)

# Every Drift event ever stored, as the 16-byte digest of its dedupe key: kept for
# DEDUPE_RETENTION_DAYS, far longer than the webhook rows, so a redelivery, replay or backfill
# of an event delivered long ago is still a duplicate (docs/reliability.md#dedupe-horizon).
dedupe_keys = Table(
    "dedupe_keys",
    metadata,
    Column("digest", LargeBinary(16), primary_key=True),
    Column("first_seen_at", Float, nullable=False),
)
Index("dedupe_keys_first_seen", dedupe_keys.c.first_seen_at)

# Named values the store keeps about itself, e.g. "dedupe_horizon": events that happened
# before it may have had their dedupe keys pruned.
watermarks = Table(
    "watermarks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Float, nullable=False),
)

# Payloads of a known type whose data failed its schema (422): kept for a translator fix.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("org_id", BigInteger),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("errors", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("released_at", Float),
    # 16 bytes of the stored payload's SHA-256: the same payload quarantined again is kept once.
    Column("digest", LargeBinary(16)),
)
Index("quarantine_digest", quarantine.c.digest, unique=True)
Index("quarantine_received", quarantine.c.received_at)

# Named leases: on SQLite only the holder of "delivery" runs a delivery loop.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# App mode: the grant that opens an org's setup page. The browser's cookie holds only a random
# token; its SHA-256 is kept here, so a grant is used once, revoked on re-install and expires.
setup_grants = Table(
    "setup_grants",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("org_id", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("setup_grants_org", setup_grants.c.org_id)

# Webhooks refused for a wrong or missing verification token, per minute (epoch minute) and
# reason: the health surfaces show the last hour's count from here.
refused_webhooks = Table(
    "refused_webhooks",
    metadata,
    Column("minute", BigInteger, primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Drift organisations installed through the app (app mode); secrets are encrypted.
orgs = Table(
    "orgs",
    metadata,
    Column("org_id", BigInteger, primary_key=True, autoincrement=False),
    Column("access_token", LargeBinary),
    Column("refresh_token", LargeBinary),
    Column("token_expires_at", Float),
    Column("write_key", LargeBinary),
    Column("segment_host", String(200)),
    # The shared secret of the org's Segment → Drift endpoint (/webhooks/segment/<orgId>).
    Column("segment_secret", LargeBinary),
    Column("status", String(32), nullable=False),
    Column("installed_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def default_database_url(instance_path: str) -> str:
    """A SQLite file in the app's instance folder."""
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "drift-segment-source.sqlite3")


def make_engine(url: str, *, connect_timeout: float = 5.0, statement_timeout: float = 30.0,
                lock_timeout: float = 5.0, **options: Any) -> Engine:
    """An engine for ``url`` tuned for this workload (WAL on SQLite, pre-ping on Postgres)
    with deadlines: on PostgreSQL, ``connect_timeout`` and ``statement_timeout`` (seconds,
    0: none); on SQLite a write waits for another writer at most ``lock_timeout``
    (DATABASE_LOCK_TIMEOUT_SECONDS)."""
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        # SQLite's busy timeout travels in the URL (``?timeout=``, read by the driver), where
        # the store's write lock (commits.WriteLock.for_engine) reads the same bound.
        sqlite_url = make_url(url).update_query_dict({"timeout": f"{lock_timeout:g}"})
        engine = create_engine(
            sqlite_url,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
            **options,
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    # Without these a database host that stopped answering would hold a request thread (and
    # the delivery loop) for as long as TCP takes to give up: minutes. Both hold for every
    # connection of the pool, the kept connection of commits.py included. A cancelled
    # statement is an error like any other: the webhook gets a 503, the round is retried.
    connect_args: dict[str, Any] = {"connect_timeout": max(2, math.ceil(connect_timeout))}
    # Keep the server options the URL may already carry (``?options=...``).
    given = make_url(url).query.get("options")
    server_options = [str(given)] if given else []
    if statement_timeout > 0:
        server_options.append(f"-c statement_timeout={math.ceil(statement_timeout * 1000)}")
    if server_options:
        connect_args["options"] = " ".join(server_options)
    # hide_parameters: a database error must never carry a webhook body into the logs.
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8,
                         hide_parameters=True, connect_args=connect_args, **options)


def _tune_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets the web workers write while the delivery loop reads; synchronous=FULL makes a
    # commit survive power loss, which is the promise behind "200 only after it is stored".
    # The busy timeout (waiting for another process's write instead of failing at once, but
    # not for ever) is the driver's ``timeout``, set from the URL in make_engine.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
