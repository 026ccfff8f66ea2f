"""Liveness, readiness and metrics tell the truth about the service."""

from __future__ import annotations

import json
from pathlib import Path

import responses
from prometheus_client.parser import text_string_to_metric_families

from drift_segment_source import create_app
from drift_segment_source.app import make_delivery

from ..support.fake_segment import FakeSegment
from .conftest import DRIFT_API_URL, TOKEN, AppFactory, webhook


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_healthz_answers_without_touching_the_store(tmp_path: Path) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'nowhere' / 'x.sqlite3'}",
                      "DRIFT_VERIFICATION_TOKEN": TOKEN})
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_backlog_and_age(make_app: AppFactory) -> None:
    app = make_app()
    app.test_client().post("/webhooks/drift", json=webhook("new_conversation",
                                                           {"id": 1, "contactId": 2}))
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 200
    store = answer.get_json()["checks"]["store"]
    assert store["backlog"] == 1 and store["oldest_pending_age_seconds"] >= 0


def test_readyz_is_503_when_the_store_is_unreachable(tmp_path: Path) -> None:
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'not-migrated.sqlite3'}",
                      "DRIFT_VERIFICATION_TOKEN": TOKEN})
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["checks"]["store"]["ok"] is False


def test_readyz_is_503_when_configuration_is_missing(make_app: AppFactory) -> None:
    answer = make_app(DRIFT_VERIFICATION_TOKEN="").test_client().get("/readyz")
    assert answer.status_code == 503
    assert "DRIFT_VERIFICATION_TOKEN" in json.dumps(answer.get_json()["checks"]["config"])


def test_metrics_count_webhooks_deliveries_latency_backlog_and_drift_calls(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url)
    client = app.test_client()
    before = samples(client.get("/metrics").get_data(as_text=True))
    client.post("/webhooks/drift", json=webhook("new_conversation", {"id": 1, "contactId": 2}))
    client.post("/webhooks/drift", json=webhook("new_conversation", {"id": 1, "contactId": 2}))
    client.post("/webhooks/drift", json=webhook("new_message", {}))
    client.post("/webhooks/drift", json=webhook("new_conversation", {}, token="bad"))
    client.post("/webhooks/drift", json=webhook("conversation_participant_added",
                                                {"conversationId": 5, "changedAt": 1714422673598,
                                                 "addedParticipants": [1]}))
    pending = samples(client.get("/metrics").get_data(as_text=True))
    assert pending[("drift_segment_source_backlog_webhooks", ())] == 2
    with responses.RequestsMock(passthru_prefixes=(segment.url,)) as drift:
        drift.get(f"{DRIFT_API_URL}/conversations/5", json={"data": {"contactId": 9}})
        make_delivery(app).run_round()
    after = samples(client.get("/metrics").get_data(as_text=True))

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    prefix = "drift_segment_source_"
    assert grew(prefix + "webhooks_total", type="new_conversation", outcome="accepted") == 1
    assert grew(prefix + "webhooks_total", type="new_conversation", outcome="duplicate") == 1
    assert grew(prefix + "webhooks_total", type="other", outcome="ignored") == 1
    assert grew(prefix + "webhooks_total", type="none", outcome="unauthorized") == 1
    assert grew(prefix + "deliveries_total", outcome="delivered") == 2
    # The row needing a lookup goes in a second batch unless its lookup had already ended.
    assert grew(prefix + "segment_batches_total", status="2xx") in (1, 2)
    assert grew(prefix + "segment_messages_total") == 2
    assert grew(prefix + "delivery_latency_seconds_count") == 2
    assert grew(prefix + "drift_api_requests_total", endpoint="conversations",
                status="200") == 1
    assert after[(prefix + "backlog_webhooks", ())] == 0
    assert after[(prefix + "oldest_pending_age_seconds", ())] == 0
    # Delivered rows are counted by deliveries_total; the gauge covers what waits.
    assert (prefix + "stored_webhooks", (("state", "delivered"),
                                         ("type", "new_conversation"))) not in after
    assert pending[(prefix + "stored_webhooks", (("state", "pending"),
                                                 ("type", "new_conversation")))] == 1
