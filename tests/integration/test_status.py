"""The status page: closed by default, admin-only, and truthful about the store."""

from __future__ import annotations

import base64

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery

from ..support.fake_segment import FakeSegment
from .conftest import AppFactory, webhook

ADMIN = "admin-token-0123456789"



@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment) -> Flask:
    app = make_app(ADMIN_TOKEN=ADMIN, SEGMENT_HOST=segment.url)
    client = app.test_client()
    for n in range(3):
        client.post("/webhooks/drift", json=webhook("new_conversation", {"id": n, "contactId": 7}))
    segment.fail_next(3, status=400)
    client.post("/webhooks/drift", json=webhook("playbook_goal_met",
                                                {"conversationId": 1, "contactId": 7}))
    make_delivery(app).run_round()
    client.post("/webhooks/drift", json=webhook("new_conversation", {"id": 99, "contactId": 7}))
    return app


def test_status_is_closed_without_an_admin_token(make_app: AppFactory) -> None:
    client = make_app().test_client()
    assert client.get("/status").status_code == 403
    answer = client.get("/status.json", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 403 and answer.get_json()["error"] == "admin_disabled"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + base64.b64encode(
    b"admin:wrong").decode(), "Basic !!notbase64", "Token " + ADMIN])
def test_status_refuses_a_missing_or_wrong_token(app: Flask, header: str | None) -> None:
    answer = app.test_client().get("/status", headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_status_json_reports_counts_backlog_latency_and_failures(app: Flask) -> None:
    answer = app.test_client().get("/status.json", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    data = answer.get_json()
    assert data["counts"]["new_conversation"]["pending"] == 1
    delivered = data["counts"]["new_conversation"]["delivered"] + data["counts"][
        "playbook_goal_met"]["delivered"]
    dead = sum(by_state["dead"] for by_state in data["counts"].values())
    assert delivered + dead == 4 and dead >= 1
    assert data["backlog"]["waiting"] == 1
    assert data["latency_last_hour"]["deliveries"] == delivered
    assert len(data["hours"]) == 24
    assert sum(hour["received"] for hour in data["hours"]) == 5
    assert all("400" in row["last_error"] for row in data["dead_letters"])


def test_status_page_renders_in_a_browser_with_basic_auth(app: Flask) -> None:
    token = base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    answer = app.test_client().get("/status", headers={"Authorization": f"Basic {token}"})
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "<svg" in html and "Stored webhooks by type and state" in html
    assert "new_conversation" in html and "dead" in html
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
