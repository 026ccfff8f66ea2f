"""The delivery side of the store: claims with leases, outcomes, waits and circuits.

A row's state is data: ``state`` (pending, held, delivered, dead, dry_run), and for a
pending row that waits, ``wait_reason`` (backoff, parked, lookup, deferred) with the
destination it waits on in ``waiting_on``. ``last_error`` is for people only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update

from .base import StoreBase
from .db import IS_PENDING, dedupe_keys, leases, watermarks, webhooks

# The longest destination key kept in ``waiting_on`` (a circuit key can be longer: a proxy
# with a long path prefix). Written and matched alike, so a longer key still finds its rows.
DESTINATION_KEY_LENGTH = 100
# A lease or due time further ahead than anything the engine sets can only come from a
# clock that was ahead when it was written (see docs/reliability.md, "Time"): such a lease
# counts as expired, and such a row as due.
IMPLAUSIBLE_MARGIN_SECONDS = 60.0


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
    dedupe_key: str = ""  # the key the event was stored under (its identity when stored)
    was_parked: bool = False  # it waited behind its destination's open circuit
    taken_in_dry_run: bool = False  # stored by a process without a write key


@dataclass(frozen=True)
class Failure:
    """A row that did not get delivered this time, and why: ``retry_after`` is how many
    seconds the failing service asked to wait; ``waiting_on`` the destination (circuit key)
    whose trouble it was."""

    id: int
    reason: str
    retry_after: float | None = None
    waiting_on: str | None = None


def stored_key(destination: str | None) -> str | None:
    """A destination's key as ``waiting_on`` keeps it."""
    return None if destination is None else destination[:DESTINATION_KEY_LENGTH]


def by_reason(failures: Iterable[Failure]) -> dict[tuple[str, str | None], list[int]]:
    """Row ids grouped by reason and destination (an outage gives every row the same)."""
    grouped: dict[tuple[str, str | None], list[int]] = {}
    for failure in failures:
        grouped.setdefault((failure.reason, stored_key(failure.waiting_on)), []).append(
            failure.id)
    return grouped


class Deliveries(StoreBase):
    """Claims, outcomes, waits and the SQLite delivery lease."""

    def claim(self, owner: str, limit: int, lease_seconds: float,
              ids: Sequence[int] | None = None) -> list[StoredWebhook]:
        """Lease up to ``limit`` due rows to ``owner`` (or, with ``ids``, those rows whether
        due or not: their lookups have ended); concurrent claimers skip each other.

        The attempt is counted at claim time, so a row that crashes its worker every time
        still runs out of attempts and reaches the dead letters.
        """
        now = self.now()
        free = or_(webhooks.c.lease_expires_at.is_(None), webhooks.c.lease_expires_at < now,
                   webhooks.c.lease_expires_at > now + lease_seconds + IMPLAUSIBLE_MARGIN_SECONDS)
        chosen = webhooks.c.id.in_(ids) if ids is not None else webhooks.c.next_attempt_at <= now
        due = (
            select(webhooks.c.id)
            .where(IS_PENDING, chosen, free)
            .order_by(webhooks.c.next_attempt_at, webhooks.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(webhooks)
            .where(webhooks.c.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + lease_seconds,
                    attempts=webhooks.c.attempts + 1)
            .returning(webhooks.c.id, webhooks.c.org_id, webhooks.c.event_type,
                       webhooks.c.payload, webhooks.c.received_at, webhooks.c.queued_at,
                       webhooks.c.attempts, webhooks.c.dedupe_key, webhooks.c.wait_reason,
                       webhooks.c.taken_in_dry_run)
        )
        with self._writing() as connection:
            rows = connection.execute(statement).all()
        loads = json.loads
        claimed = [
            StoredWebhook(row_id, org_id, event_type, loads(payload), received_at, queued_at,
                          attempts, key, wait_reason == "parked", bool(dry_run))
            for (row_id, org_id, event_type, payload, received_at, queued_at, attempts, key,
                 wait_reason, dry_run) in rows
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
        awaiting_lookup: Mapping[float, Iterable[Failure]] | None = None,
        parked: Iterable[Failure] = (),
        remember: Sequence[bytes] = (),
    ) -> int:
        """Write a delivery round's outcomes in one transaction (one fsync, not one per row).

        Only rows still leased to ``owner`` change: a loop that lost its lease must not
        overwrite the work of the loop that took the rows over. ``remember`` are keys of
        messages sent once for good (linking identifies), kept with the dedupe keys.
        Returns the rows changed.
        """
        now = self.now()
        finished = {"wait_reason": None, "waiting_on": None}
        changes: list[tuple[list[int], dict[str, Any]]] = [
            (list(delivered), {"state": "delivered", "finished_at": now, "last_error": None,
                               **finished}),
            (list(dry_run), {"state": "dry_run", "finished_at": now, **finished}),
        ]
        for (reason, _), ids in by_reason(dead).items():
            changes.append((ids, {"state": "dead", "finished_at": now, "last_error": reason,
                                  **finished}))
        for hold_reason, failures in (held or {}).items():
            for (reason, _), ids in by_reason(failures).items():
                # Held rows spend no attempts: a row held and released again and again (a
                # process without a write key beside one with it) must not run out of them.
                changes.append((ids, {"state": "held", "hold_reason": hold_reason,
                                      "last_error": reason,
                                      "attempts": webhooks.c.attempts - 1, **finished}))
        for due_at, failures in (retry or {}).items():
            for (reason, destination), ids in by_reason(failures).items():
                changes.append((ids, {"next_attempt_at": due_at, "last_error": reason,
                                      "wait_reason": "backoff", "waiting_on": destination}))
        by_wait: dict[tuple[str, str | None, float], list[int]] = {}
        for failure in parked:
            wait = round(failure.retry_after or 0.0, 1)
            by_wait.setdefault((failure.reason, stored_key(failure.waiting_on), wait),
                               []).append(failure.id)
        for (reason, destination, wait), ids in by_wait.items():
            # Not tried either: the attempt comes back; the destination says what it awaits.
            changes.append((ids, {"next_attempt_at": now + wait, "last_error": reason,
                                  "attempts": webhooks.c.attempts - 1, "wait_reason": "parked",
                                  "waiting_on": destination}))
        for wait_reason, schedule in (("deferred", deferred), ("lookup", awaiting_lookup)):
            for due_at, failures in (schedule or {}).items():
                # Not tried, so the attempt counted at claim time is given back.
                changes.append(([failure.id for failure in failures], {
                    "next_attempt_at": due_at, "attempts": webhooks.c.attempts - 1,
                    "wait_reason": wait_reason, "waiting_on": None}))
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

    def make_due_behind(self, destination: str) -> int:
        """Rows that wait for a recovered destination (parked behind its circuit, or backing
        off after its failures) are due now."""
        statement = (
            update(webhooks)
            .where(IS_PENDING, webhooks.c.lease_owner.is_(None),
                   webhooks.c.waiting_on == stored_key(destination),
                   webhooks.c.wait_reason.in_(("parked", "backoff")))
            .values(next_attempt_at=self.now())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def make_parked_due(self) -> int:
        """Rows parked behind any destination's circuit are due now: a process that starts
        knows no circuit open (and the destination may be fixed, or another host now)."""
        statement = (
            update(webhooks)
            .where(IS_PENDING, webhooks.c.lease_owner.is_(None),
                   webhooks.c.wait_reason == "parked")
            .values(next_attempt_at=self.now())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def make_due(self, ids: Sequence[int]) -> int:
        """Make waiting rows due now (their Drift API lookup has ended)."""
        statement = (
            update(webhooks)
            .where(webhooks.c.id.in_(ids), IS_PENDING, webhooks.c.lease_owner.is_(None))
            .values(next_attempt_at=self.now())
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def make_due_from_the_future(self, longest_wait: float) -> int:
        """Rows due further ahead than any wait the engine sets are due now: their due time
        was written by a clock that was ahead (it has since stepped back)."""
        now = self.now()
        statement = (
            update(webhooks)
            .where(IS_PENDING,
                   webhooks.c.next_attempt_at > now + longest_wait + IMPLAUSIBLE_MARGIN_SECONDS)
            .values(next_attempt_at=now)
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    def shift_waits(self, seconds: float) -> int:
        """Move every pending row's due time by ``seconds``: the wall clock was believed to
        have stepped by as much, and rows scheduled before the step wait in its old time."""
        now = self.now()
        statement = (
            update(webhooks)
            .where(IS_PENDING, webhooks.c.next_attempt_at > now)
            .values(next_attempt_at=webhooks.c.next_attempt_at + seconds)
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
        now = self.now()
        statement = (
            update(webhooks)
            .where(*conditions)
            .values(state="pending", hold_reason=None, next_attempt_at=now, queued_at=now,
                    wait_reason=None, waiting_on=None)
        )
        with self._writing() as connection:
            return connection.execute(statement).rowcount

    # -- circuits (shown by every process: /readyz, /status, /metrics) ----------------------

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

    # -- the singleton lease (SQLite runs one delivery loop at a time) ----------------------

    def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the named lease; False while someone else holds it. A lease whose
        end lies further ahead than ``seconds`` was written by a clock that was ahead: it
        is taken over like an expired one."""
        now = self.now()
        statement = (
            self._insert(leases)
            .values(name=name, owner=owner, expires_at=now + seconds)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"owner": owner, "expires_at": now + seconds},
                where=or_(leases.c.owner == owner, leases.c.expires_at < now,
                          leases.c.expires_at > now + seconds + IMPLAUSIBLE_MARGIN_SECONDS),
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
