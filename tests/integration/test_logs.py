"""Logs are one JSON line per event and never carry a secret or a request body."""

from __future__ import annotations

import json
import logging

import pytest

from drift_segment_source.app import make_delivery

from ..support.fake_segment import FakeSegment
from .conftest import TOKEN, AppFactory, webhook

MARKER = "very-private-visitor-text-4242"
WRITE_KEY = "wk-secret-0123456789abcdef"
DRIFT_TOKEN = "drift-secret-token-abcdef"



def test_logs_are_json_lines_without_secrets_or_bodies(make_app: AppFactory,
                                                       segment: FakeSegment,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    app = make_app(SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=segment.url,
                   DRIFT_ACCESS_TOKEN=DRIFT_TOKEN)
    client = app.test_client()
    body = webhook("button_clicked", {"id": 1, "body": MARKER, "author": {"id": 5},
                                      "conversationId": 9})
    client.post("/webhooks/drift", json=body, headers={"X-Verification-Token": TOKEN})
    client.post("/webhooks/drift", json={**body, "token": "wrong-" + MARKER})
    client.post("/webhooks/drift", json=webhook("button_clicked", {"body": MARKER}))
    client.post("/webhooks/drift", data=b"{" + MARKER.encode(),
                content_type="application/json")
    segment.fail_next(1, status=500)
    make_delivery(app).run_round()
    app.extensions["refusals"].flush()  # refusals are logged in aggregate, every few seconds
    # Even a careless log call is scrubbed by the redaction filter.
    logging.getLogger("drift_segment_source.test").warning(
        "oops %s %s %s", TOKEN, WRITE_KEY, DRIFT_TOKEN)
    output = capfd.readouterr().err
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert len(lines) >= 6
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "name", "message"} <= set(records[0])
    for secret in (TOKEN, WRITE_KEY, DRIFT_TOKEN, MARKER):
        assert secret not in output
    assert "[redacted] [redacted] [redacted]" in output
    webhook_lines = [record for record in records if record["name"].endswith("webhooks")]
    # A refused token is not a line per request (a flood would fill the log) but a WARNING
    # per reason with the count.
    assert {record["outcome"] for record in webhook_lines} == {
        "accepted", "invalid_data", "invalid_json"}
    assert all(record["request_id"] for record in webhook_lines)
    [refused] = [record for record in records if record["name"].endswith("refusals")]
    assert (refused["level"], refused["reason"], refused["refused"]) == (
        "WARNING", "drift_wrong_token", 1)
