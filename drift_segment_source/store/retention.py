"""Retention: what each state keeps, the dedupe horizon, and cut-offs that cannot run ahead.

Every cut-off is taken from a "now" that is never ahead of what the store has seen (its
newest webhook or dedupe key) nor of the database's own clock, so a host clock that jumps
ahead deletes nothing early and moves no horizon (see docs/reliability.md, "Time").
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, func, literal_column, select, text, update

from .base import ROWS_PER_COMMIT, StoreBase
from .db import IS_DEAD, IS_FINISHED, IS_HELD, dedupe_keys, quarantine, watermarks, webhooks

log = logging.getLogger("drift_segment_source.store")

DEDUPE_HORIZON = "dedupe_horizon"
# Keys first seen before this were deleted: a horizon is never brought back below it.
KEYS_DELETED_BEFORE = "dedupe_keys_deleted_before"
# How long a process trusts the dedupe horizon it read. Keys are deleted only in the prune
# after the one that announced the new horizon, so every process has read it by then.
HORIZON_CACHE_SECONDS = 60
# PostgreSQL's own clock, on its own host: a second opinion when the service's host clock
# is ahead. (SQLite's would be the service host's clock again.)
DATABASE_NOW = "SELECT EXTRACT(EPOCH FROM clock_timestamp())"


class Retention(StoreBase):
    """Pruning of every state, and the dedupe horizon."""

    _horizon: tuple[float, float] | None = None  # (value, monotonic time it was read)

    def trusted_now(self) -> float:
        """The latest time a cut-off may be taken from: the wall clock, unless the store's
        newest webhook or key, or PostgreSQL's own clock, says it is behind that."""
        now = self.now()
        with self.engine.connect() as connection:
            newest_row = connection.execute(
                select(webhooks.c.received_at).order_by(webhooks.c.id.desc()).limit(1)).scalar()
            newest_key = connection.execute(select(func.max(dedupe_keys.c.first_seen_at))
                                             ).scalar()
            database_now = (connection.execute(text(DATABASE_NOW)).scalar()
                            if self.dialect == "postgresql" else None)
        seen = [float(value) for value in (newest_row, newest_key) if value is not None]
        candidates = [now, *([max(seen)] if seen else []),
                      *([float(database_now)] if database_now is not None else [])]
        return min(candidates)

    def expire_held(self, queued_before: float, max_age_hours: float) -> int:
        """Held rows queued before ``queued_before`` become dead letters with the reason."""
        now = self.now()
        chosen = (select(webhooks.c.id).where(IS_HELD, webhooks.c.queued_at < queued_before)
                  .limit(ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(
            update(webhooks)
            .where(webhooks.c.id.in_(chosen), IS_HELD)
            .values(state="dead", finished_at=now,
                    last_error=literal_column(f"'held over {max_age_hours:g} hours: '")
                    + func.coalesce(webhooks.c.last_error, webhooks.c.hold_reason)))

    def prune(self, delivered_before: float) -> int:
        """Delete delivered (and dry-run) rows finished before ``delivered_before``."""
        chosen = (select(webhooks.c.id)
                  .where(IS_FINISHED, webhooks.c.finished_at < delivered_before)
                  .limit(ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(delete(webhooks).where(webhooks.c.id.in_(chosen)))

    def prune_dead(self, died_before: float) -> int:
        """Delete dead letters that died before ``died_before``."""
        chosen = (select(webhooks.c.id).where(IS_DEAD, webhooks.c.finished_at < died_before)
                  .limit(ROWS_PER_COMMIT).scalar_subquery())
        return self._in_chunks(delete(webhooks).where(webhooks.c.id.in_(chosen)))

    def prune_quarantine(self, received_before: float) -> int:
        """Delete quarantine entries received before ``received_before``."""
        chosen = (select(quarantine.c.id).where(quarantine.c.received_at < received_before)
                  .limit(ROWS_PER_COMMIT).scalar_subquery())
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

    def dedupe_horizon(self) -> float:
        """Epoch seconds before which events may have lost their dedupe keys (0: none have).

        Read on every webhook, so cached for HORIZON_CACHE_SECONDS.
        """
        read_at = self.clock.monotonic()
        if self._horizon is not None and read_at - self._horizon[1] < HORIZON_CACHE_SECONDS:
            return self._horizon[0]
        with self.engine.connect() as connection:
            value = connection.execute(
                select(watermarks.c.value).where(watermarks.c.name == DEDUPE_HORIZON)
            ).scalar()
        self._horizon = (float(value or 0.0), read_at)
        return self._horizon[0]

    def prune_dedupe_keys(self, cutoff: float) -> int:
        """Forget dedupe keys first seen before the horizon announced last time; announce
        ``cutoff`` as the next horizon when keys older than it exist. Keys deleted.

        Announcing first and deleting a prune later means every process refuses events
        from before the horizon before their keys are gone (see HORIZON_CACHE_SECONDS). A
        horizon ahead of ``cutoff`` was written by a clock that was ahead: it is brought
        back to ``cutoff`` (and no key newer than that is deleted).
        """
        with self.engine.connect() as connection:
            marks = dict(connection.execute(select(watermarks.c.name, watermarks.c.value).where(
                watermarks.c.name.in_((DEDUPE_HORIZON, KEYS_DELETED_BEFORE)))).all())
        announced, deleted_before = marks.get(DEDUPE_HORIZON), marks.get(KEYS_DELETED_BEFORE)
        deleted = 0
        if announced:
            forget_before = min(float(announced), cutoff)
            if forget_before > (deleted_before or 0):
                self._set_watermark(KEYS_DELETED_BEFORE, forget_before)
            chosen = (select(dedupe_keys.c.digest)
                      .where(dedupe_keys.c.first_seen_at < forget_before)
                      .limit(ROWS_PER_COMMIT).scalar_subquery())
            deleted = self._in_chunks(delete(dedupe_keys).where(
                dedupe_keys.c.digest.in_(chosen)))
        with self.engine.connect() as connection:
            older = connection.execute(
                select(dedupe_keys.c.digest).where(dedupe_keys.c.first_seen_at < cutoff).limit(1)
            ).first()
        # A horizon ahead of the cut-off was written by a clock that was ahead: it comes back,
        # but never below keys already deleted (those events would be taken for new ones).
        floor = max(cutoff, float(deleted_before or 0))
        ahead = announced is not None and float(announced) > floor
        if ahead:
            log.warning("dedupe horizon was ahead of the clock's cut-off; brought back",
                        extra={"horizon": announced, "to": floor})
            self._set_watermark(DEDUPE_HORIZON, floor)
            self._horizon = None
        elif older is not None and cutoff > (announced or 0):
            self._set_watermark(DEDUPE_HORIZON, cutoff)
        return deleted

    def _set_watermark(self, name: str, value: float) -> None:
        """Write one of the store's named values."""
        with self._writing() as connection:
            connection.execute(
                self._insert(watermarks).values(name=name, value=value)
                .on_conflict_do_update(index_elements=["name"], set_={"value": value}))
