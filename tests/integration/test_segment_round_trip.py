"""Drift → Segment → Drift never echoes (docs/segment-to-drift.md#loop-guard): a Drift webhook
is delivered to a fake Segment, Segment's Webhooks destination forwards those messages back to
``/webhooks/segment`` as it would, and they are ignored: nothing stored, no Drift call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.webhooks import DRIFT_TOKEN, SECRET, headers, stringify
from .conftest import FIXTURES, AppFactory


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(token=DRIFT_TOKEN) as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, drift: FakeDrift,
        fixed_clock: Any) -> Flask:
    # Stitching gives the messages a userId, so without the guard they would reach Drift.
    return make_app(SEGMENT_HOST=segment.url, SEGMENT_SHARED_SECRET=SECRET,
                    DRIFT_API_URL=drift.url, IDENTITY_STITCHING="external_id",
                    CLOCK=fixed_clock)


def as_segment_forwards(message: dict[str, Any]) -> dict[str, Any]:
    """A message as Segment's Webhooks destination sends it on: what the source got, plus
    the fields Segment's pipeline adds."""
    return {**message, "originalTimestamp": message["timestamp"],
            "receivedAt": "2024-04-29T20:00:00.412Z", "sentAt": message.get("sentAt"),
            "channel": "server", "version": 2, "projectId": "proj-1"}


def relay_to_segment(app: Flask, segment: FakeSegment) -> list[dict[str, Any]]:
    """Post a Drift webhook and deliver it to the fake Segment; the messages it got."""
    body = (FIXTURES / "contact_identified" / "stitched_site_user.json").read_bytes()
    answer = app.test_client().post("/webhooks/drift", data=body,
                                    content_type="application/json")
    assert answer.get_json()["status"] == "accepted"
    assert make_delivery(app).run_round() == 1
    assert len(segment.messages) == 2  # the linking identify, then the identify
    assert all(message.get("userId") == "user-8841" for message in segment.messages)
    return [as_segment_forwards(message) for message in segment.messages]


def forward(app: Flask, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Segment's Webhooks (Actions) destination, batching on: one signed array."""
    body = stringify(messages)
    answer = app.test_client().post("/webhooks/segment", data=body,
                                    headers=headers(stringify(messages[0])))
    assert answer.status_code == 200, answer.get_json()
    reply: dict[str, Any] = answer.get_json()
    return reply


def test_a_drift_event_forwarded_back_by_segment_is_ignored_by_the_loop_guard(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    reply = forward(app, relay_to_segment(app, segment))
    assert reply["counts"] == {"ignored": 2}
    assert all("drift-segment-source itself (loop guard)" in result["reason"]
               for result in reply["results"])
    assert make_delivery(app).run_round() == 0
    assert drift.calls == []
    assert app.extensions["store"].counts() == {("contact_identified", "delivered"): 1}


def test_integrations_drift_false_alone_still_stops_the_echo(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    """A workspace that rewrites context (a Segment Function, say) loses the integration
    name; the ``integrations: {"Drift": false}`` every message carries still stops it."""
    messages = relay_to_segment(app, segment)
    for message in messages:
        del message["context"]["integration"]
    reply = forward(app, messages)
    assert [result["reason"] for result in reply["results"]] == [
        "integrations.Drift is false"] * 2
    assert drift.calls == []


def test_without_both_guards_the_same_messages_would_reach_drift(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    """The control: it is the guard, not the messages' shape, that keeps them out."""
    messages = relay_to_segment(app, segment)
    for message in messages:
        del message["context"]["integration"]
        del message["integrations"]
    assert forward(app, messages)["counts"] == {"accepted": 2}
    make_delivery(app).run_round()
    assert drift.requests_made()[0] == "GET /contacts?idType=external&id=user-8841"
