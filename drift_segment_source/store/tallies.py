"""Counts the health surfaces need beside ``Store``'s own: dead letters, rows retried after a
failure, quarantined payloads. Each is one indexed count: a surface polled every few seconds
costs what the rows waiting cost, never the delivered ones kept for RETENTION_DAYS."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .db import IS_DEAD, IS_PENDING, quarantine, webhooks


def dead_letters(engine: Engine) -> int:
    """Rows delivery gave up on (state dead), on their partial index."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(IS_DEAD)).scalar_one())


def retrying(engine: Engine) -> int:
    """Pending rows whose last attempt failed (they wait out a backoff or a circuit)."""
    statement = select(func.count()).where(IS_PENDING, webhooks.c.last_error.is_not(None))
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def quarantined(engine: Engine) -> int:
    """Quarantined payloads not yet released by a retry."""
    statement = (select(func.count()).select_from(quarantine)
                 .where(quarantine.c.released_at.is_(None)))
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())
