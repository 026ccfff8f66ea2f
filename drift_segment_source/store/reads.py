"""What operators read and do: counts, backlog, latency, dead letters, quarantine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, literal_column, select, update

from .base import StoreBase
from .db import IS_DEAD, IS_FINISHED, IS_HELD, IS_PENDING, quarantine, webhooks


class Reads(StoreBase):
    """Counts and lists for the status page, metrics and the CLI; operator actions."""

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

    def waiting_by_reason(self) -> dict[str, int]:
        """Pending rows per wait reason ("due": not waiting for anything)."""
        statement = (select(webhooks.c.wait_reason, func.count()).where(IS_PENDING)
                     .group_by(webhooks.c.wait_reason))
        with self.engine.connect() as connection:
            return {str(reason or "due"): int(number)
                    for reason, number in connection.execute(statement)}

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
            .values(state="pending", attempts=0, next_attempt_at=self.now(), finished_at=None,
                    queued_at=self.now(), wait_reason=None, waiting_on=None)
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

    def purge_quarantined(self, ids: Sequence[int] | None = None) -> int:
        """Delete unreleased quarantine entries (all, or the given ids) for good."""
        conditions = [quarantine.c.released_at.is_(None)]
        if ids:
            conditions.append(quarantine.c.id.in_(ids))
        with self._writing() as connection:
            return connection.execute(delete(quarantine).where(and_(*conditions))).rowcount

    def release_quarantined(self, quarantine_id: int) -> None:
        """Mark a quarantine entry as handled (it now passes validation)."""
        with self._writing() as connection:
            connection.execute(
                update(quarantine)
                .where(quarantine.c.id == quarantine_id)
                .values(released_at=self.now())
            )
