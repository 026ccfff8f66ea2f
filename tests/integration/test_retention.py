"""Growth is bounded and said (docs/reliability.md#retention): every state has a retention,
what goes is counted and logged first, and held rows show by reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery

from ..support.clock import FakeClock
from ..support.fake_segment import FakeSegment
from .conftest import TOKEN, AppFactory, seen_now, webhook

HOUR = 3600
DAY = 86_400



def counter(app: Flask, what: str) -> float:
    for line in app.test_client().get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(f'drift_segment_source_dropped_total{{what="{what}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def conversation(number: int) -> dict[str, Any]:
    return webhook("new_conversation", {"id": number, "contactId": 100 + number,
                                        "createdAt": 1714419312425 + number})


def logged(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The service's JSON log lines written so far."""
    return [json.loads(line) for line in capfd.readouterr().err.splitlines()
            if line.startswith("{")]


def test_held_rows_become_dead_letters_with_the_reason_after_their_maximum_age(
        make_app: AppFactory, capfd: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    # A self-hosted service without a Drift token holds the events that need a lookup.
    app = make_app(CLOCK=clock, DRIFT_ACCESS_TOKEN="", ADMIN_TOKEN="admin-token-123456")
    client = app.test_client()
    client.post("/webhooks/drift", json=webhook("conversation_participant_added", {
        "conversationId": 5, "changedAt": 1714422673598, "addedParticipants": [1]}))
    delivery = make_delivery(app)
    delivery.run_round()
    status = client.get("/status.json", headers={
        "Authorization": "Bearer admin-token-123456"}).get_json()
    assert status["backlog"]["held_by_reason"] == {"no_drift_token": 1}
    page = client.get("/status", headers={"Authorization": "Bearer admin-token-123456"})
    assert "1 held" in page.get_data(as_text=True)
    before = counter(app, "held_expired")
    clock.advance(169 * HOUR)  # past HELD_MAX_AGE_HOURS (168)
    logged(capfd)
    seen_now(app)
    delivery.housekeeping.prune()
    assert any(line["message"] == "held rows became dead letters" and line["count"] == 1
               for line in logged(capfd))
    [letter] = app.extensions["store"].dead_letters()
    assert letter["last_error"].startswith("held over 168 hours: ")
    assert "DRIFT_ACCESS_TOKEN" in letter["last_error"]
    assert counter(app, "held_expired") == before + 1


def test_dead_letters_and_quarantine_are_deleted_after_their_retention_counted_first(
        make_app: AppFactory, segment: FakeSegment,
        capfd: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    app = make_app(CLOCK=clock, SEGMENT_HOST=segment.url)
    client = app.test_client()
    client.post("/webhooks/drift", json=conversation(1))
    segment.fail_always(401)  # refused for good: a dead letter
    delivery = make_delivery(app)
    delivery.run_round()
    client.post("/webhooks/drift", json=webhook("new_conversation", {"id": "not an id"}))
    store = app.extensions["store"]
    assert len(store.dead_letters()) == 1 and len(store.quarantined()) == 1
    clock.advance(29 * DAY)
    seen_now(app)
    delivery.housekeeping.prune()
    assert len(store.dead_letters()) == 1 and len(store.quarantined()) == 1
    dead_before, quarantined_before = counter(app, "dead_letter"), counter(app, "quarantined")
    clock.advance(2 * DAY)  # past DEAD_LETTER_RETENTION_DAYS and QUARANTINE_RETENTION_DAYS
    logged(capfd)
    seen_now(app)
    delivery.housekeeping.prune()
    said = [line for line in logged(capfd) if "past their retention" in line["message"]]
    assert {(line["what"], line["count"]) for line in said} == {("dead", 1), ("quarantine", 1)}
    assert store.dead_letters() == [] and store.quarantined() == []
    assert counter(app, "dead_letter") == dead_before + 1
    assert counter(app, "quarantined") == quarantined_before + 1


def test_the_same_invalid_payload_is_quarantined_once(make_app: AppFactory) -> None:
    app = make_app()
    body = webhook("new_conversation", {"id": "not an id", "contactId": 1})
    first = app.test_client().post("/webhooks/drift", json=body).get_json()
    again = app.test_client().post("/webhooks/drift", json=body).get_json()
    assert first["quarantineId"] == again["quarantineId"]
    assert len(app.extensions["store"].quarantined()) == 1


def test_metrics_can_be_closed_with_a_token(make_app: AppFactory) -> None:
    app = make_app(METRICS_TOKEN="scrape-token-0123")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123"})
    assert answer.status_code == 200
    assert "drift_segment_source_backlog_webhooks" in answer.get_data(as_text=True)
    assert make_app().test_client().get("/metrics").status_code == 200


def test_readyz_gives_anonymous_callers_counts_never_ids(make_app: AppFactory) -> None:
    app = make_app()
    app.test_client().post("/webhooks/drift", json=conversation(7),
                           headers={"X-Verification-Token": TOKEN})
    checks = app.test_client().get("/readyz").get_json()["checks"]
    assert checks["store"]["backlog"] == 1
    assert isinstance(checks["circuits"]["open"], int)
