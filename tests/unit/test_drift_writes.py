"""Segment → Drift writes against an in-process Drift API: creates that race, remembered
contacts, and how a timeline refusal is read."""

from __future__ import annotations

from typing import Any

import pytest

from drift_segment_source.destinations.drift import DriftWrites, NotYet
from drift_segment_source.drift_api import Credentials, DriftApiError
from drift_segment_source.sources.segment.translators import Timeline, Upsert


class StubApi:
    """Answers the DriftWrites calls from scripted values, recording them."""

    def __init__(self, found: list[Any], create_error: DriftApiError | None = None,
                 timeline_error: DriftApiError | None = None) -> None:
        self.found = found
        self.create_error = create_error
        self.timeline_error = timeline_error
        self.calls: list[tuple[str, Any]] = []

    def contact_by_external_id(self, external_id: str, credentials: Credentials) -> Any:
        self.calls.append(("find", external_id))
        return self.found.pop(0)

    def create_contact(self, attributes: dict[str, Any], credentials: Credentials) -> Any:
        self.calls.append(("create", attributes))
        if self.create_error is not None:
            raise self.create_error
        return {"data": {"id": 5}}

    def update_contact(self, contact_id: Any, attributes: dict[str, Any],
                       credentials: Credentials) -> Any:
        self.calls.append(("patch", contact_id))
        return {"data": {"id": contact_id}}

    def timeline_event(self, event: dict[str, Any], credentials: Credentials) -> Any:
        self.calls.append(("timeline", event))
        if self.timeline_error is not None:
            raise self.timeline_error
        return {"data": event}


CREDENTIALS = Credentials("token")


def test_a_create_refused_because_the_contact_now_exists_updates_it() -> None:
    api = StubApi([None, {"id": 9}], create_error=DriftApiError(409, "Conflict", False))
    writes = DriftWrites(api)  # type: ignore[arg-type]
    upsert = Upsert({"name": "Ada"}, external_id="u-1", email="ada@example.com")
    assert writes.apply(1, [upsert], CREDENTIALS) is None
    assert [name for name, _ in api.calls] == ["find", "create", "find", "patch"]


def test_a_create_refused_for_another_reason_is_raised() -> None:
    api = StubApi([None, None], create_error=DriftApiError(400, "Bad Request", False))
    writes = DriftWrites(api)  # type: ignore[arg-type]
    upsert = Upsert({"name": "Ada"}, external_id="u-1", email="not-an-email")
    with pytest.raises(DriftApiError, match="400"):
        writes.apply(1, [upsert], CREDENTIALS)


def test_a_found_contact_is_remembered_for_the_next_call() -> None:
    api = StubApi([{"id": 9}])
    writes = DriftWrites(api)  # type: ignore[arg-type]
    for _ in range(3):
        writes.apply(1, [Upsert({"companyId": "g"}, external_id="u-1")], CREDENTIALS)
    assert [name for name, _ in api.calls] == ["find", "patch", "patch", "patch"]


def test_a_timeline_refusal_for_an_unknown_external_id_is_not_yet() -> None:
    api = StubApi([None], timeline_error=DriftApiError(400, "Bad Request", False))
    writes = DriftWrites(api)  # type: ignore[arg-type]
    outcome = writes.apply(1, [Timeline("x", 1, external_id="u-1")], CREDENTIALS)
    assert isinstance(outcome, NotYet)


def test_a_timeline_refusal_for_a_known_user_is_raised() -> None:
    api = StubApi([{"id": 9}], timeline_error=DriftApiError(400, "Bad Request", False))
    writes = DriftWrites(api)  # type: ignore[arg-type]
    with pytest.raises(DriftApiError, match="400"):
        writes.apply(1, [Timeline("x", 1, external_id="u-1")], CREDENTIALS)

