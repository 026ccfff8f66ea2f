"""An in-memory store with the delivery side's interface: the engine's unit tests run on it
without a database (the real store is tested in the integration tier)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drift_segment_source.store.deliveries import Failure, StoredWebhook


@dataclass
class Row:
    """One stored webhook, with the columns the engine reads and writes."""

    id: int
    org_id: int
    event_type: str
    payload: str
    received_at: float
    queued_at: float
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    hold_reason: str | None = None
    last_error: str | None = None
    finished_at: float | None = None
    wait_reason: str | None = None
    waiting_on: str | None = None


@dataclass
class MemoryStore:
    """Rows, dedupe keys, circuits and leases in dictionaries, behind one lock."""

    clock: Any
    dialect: str = "memory"
    rows: dict[int, Row] = field(default_factory=dict)
    keys: dict[bytes, float] = field(default_factory=dict)
    breakers: dict[str, float] = field(default_factory=dict)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return float(self.clock.wall())

    def add(self, org_id: int, event_type: str, payload: dict[str, Any],
            state: str = "pending", hold_reason: str | None = None) -> int:
        """Store a webhook as the door would (tests seed rows with it)."""
        with self._lock:
            row_id = len(self.rows) + 1
            now = self.now()
            self.rows[row_id] = Row(row_id, org_id, event_type, json.dumps(payload), now, now,
                                    state=state, next_attempt_at=now, hold_reason=hold_reason)
            return row_id

    def claim(self, owner: str, limit: int, lease_seconds: float,
              ids: Sequence[int] | None = None) -> list[StoredWebhook]:
        now = self.now()
        with self._lock:
            due = sorted((row for row in self.rows.values()
                          if row.state == "pending"
                          and (row.id in ids if ids is not None else row.next_attempt_at <= now)
                          and (row.lease_expires_at is None or row.lease_expires_at < now)),
                         key=lambda row: (row.next_attempt_at, row.id))[:limit]
            for row in due:
                row.lease_owner, row.lease_expires_at = owner, now + lease_seconds
                row.attempts += 1
            return [StoredWebhook(row.id, row.org_id, row.event_type, json.loads(row.payload),
                                  row.received_at, row.queued_at, row.attempts) for row in due]

    def record(self, owner: str, *, delivered: Sequence[int] = (),
               dry_run: Sequence[int] = (), dead: Iterable[Failure] = (),
               held: Mapping[str, Iterable[Failure]] | None = None,
               retry: Mapping[float, Iterable[Failure]] | None = None,
               deferred: Mapping[float, Iterable[Failure]] | None = None,
               awaiting_lookup: Mapping[float, Iterable[Failure]] | None = None,
               parked: Iterable[Failure] = (), remember: Sequence[bytes] = ()) -> int:
        now = self.now()
        changes: list[tuple[int, dict[str, Any]]] = []
        finished = {"wait_reason": None, "waiting_on": None, "finished_at": now}
        changes += [(row_id, {"state": "delivered", "last_error": None, **finished})
                    for row_id in delivered]
        changes += [(row_id, {"state": "dry_run", **finished}) for row_id in dry_run]
        changes += [(failure.id, {"state": "dead", "last_error": failure.reason, **finished})
                    for failure in dead]
        for hold_reason, failures in (held or {}).items():
            changes += [(failure.id, {"state": "held", "hold_reason": hold_reason,
                                      "last_error": failure.reason, "wait_reason": None})
                        for failure in failures]
        for due_at, failures in (retry or {}).items():
            changes += [(failure.id, {"next_attempt_at": due_at, "last_error": failure.reason,
                                      "wait_reason": "backoff",
                                      "waiting_on": failure.waiting_on}) for failure in failures]
        changes += [(failure.id, {"next_attempt_at": now + (failure.retry_after or 0.0),
                                  "last_error": failure.reason, "wait_reason": "parked",
                                  "waiting_on": failure.waiting_on, "give_back": True})
                    for failure in parked]
        for reason, schedule in (("deferred", deferred), ("lookup", awaiting_lookup)):
            for due_at, failures in (schedule or {}).items():
                changes += [(failure.id, {"next_attempt_at": due_at, "wait_reason": reason,
                                          "waiting_on": None, "give_back": True})
                            for failure in failures]
        changed = 0
        with self._lock:
            for key in remember:
                self.keys.setdefault(key, now)
            for row_id, values in changes:
                row = self.rows.get(row_id)
                if row is None or row.lease_owner != owner:
                    continue
                if values.pop("give_back", False):
                    row.attempts -= 1
                for name, value in values.items():
                    setattr(row, name, value)
                row.lease_owner = row.lease_expires_at = None
                changed += 1
        return changed

    def known_keys(self, keys: Iterable[bytes]) -> set[bytes]:
        with self._lock:
            return {key for key in keys if key in self.keys}

    def make_due_behind(self, destination: str) -> int:
        return self._make_due(lambda row: row.waiting_on == destination[:100]
                              and row.wait_reason in ("parked", "backoff"))

    def make_due(self, ids: Sequence[int]) -> int:
        wanted = set(ids)
        return self._make_due(lambda row: row.id in wanted)

    def _make_due(self, chosen: Any) -> int:
        now = self.now()
        with self._lock:
            rows = [row for row in self.rows.values() if row.state == "pending"
                    and row.lease_owner is None and chosen(row)]
            for row in rows:
                row.next_attempt_at = now
            return len(rows)

    def release(self, owner: str) -> int:
        with self._lock:
            rows = [row for row in self.rows.values() if row.lease_owner == owner
                    and row.state == "pending"]
            for row in rows:
                row.lease_owner = row.lease_expires_at = None
            return len(rows)

    def set_breaker(self, key: str, opened_at: float | None) -> None:
        with self._lock:
            if opened_at is None:
                self.breakers.pop(key, None)
            else:
                self.breakers[key] = opened_at

    def open_breakers(self) -> dict[str, float]:
        with self._lock:
            return dict(self.breakers)

    def take_lease(self, name: str, owner: str, seconds: float) -> bool:
        now = self.now()
        with self._lock:
            holder = self.leases.get(name)
            if holder is None or holder[0] == owner or holder[1] < now:
                self.leases[name] = (owner, now + seconds)
                return True
            return False

    def drop_lease(self, name: str, owner: str) -> None:
        with self._lock:
            if self.leases.get(name, ("",))[0] == owner:
                del self.leases[name]

    def row(self, row_id: int) -> Row:
        """A row as it stands (tests read it)."""
        with self._lock:
            return self.rows[row_id]
