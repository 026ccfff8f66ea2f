"""Delivery of Segment messages to Drift (docs/segment-to-drift.md): the same store and loop as
the other direction, with retries, dead letters and the Drift circuit; Segment is never posted
to."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.breakers import drift_key

from ..support.clock import FakeClock
from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.webhooks import DRIFT_TOKEN, SECRET, sign, stringify
from .conftest import FIXED_RECEIPT, AppFactory

KNOWN = {"id": 21760538950, "createdAt": 1714300000000,
         "attributes": {"email": "ada@example.com", "externalId": "user-8841"}}



@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(token=DRIFT_TOKEN) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FIXED_RECEIPT)


@pytest.fixture
def app(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment,
        clock: FakeClock) -> Flask:
    return make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                    SEGMENT_HOST=segment.url, CLOCK=clock, SEGMENT_UNKNOWN_USER_RETRY_MINUTES=1)


def send(app: Flask, message: dict[str, Any]) -> None:
    body = stringify(message)
    answer = app.test_client().post("/webhooks/segment", data=body, headers={
        "Content-Type": "application/json", "X-Signature": sign(body)})
    assert answer.get_json()["status"] == "accepted", answer.get_json()


def track(user_id: str = "user-8841", message_id: str = "t-1") -> dict[str, Any]:
    return {"type": "track", "messageId": message_id, "userId": user_id,
            "event": "Order Completed", "timestamp": "2024-04-29T19:40:00.123Z"}


def identify(user_id: str = "user-8841", message_id: str = "i-1",
             **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "userId": user_id,
            "traits": traits or {"email": "ada@example.com", "name": "Ada"},
            "timestamp": "2024-04-29T19:35:12.996Z"}


def states(app: Flask) -> dict[str, int]:
    found: dict[str, int] = {}
    for (_, state), number in app.extensions["store"].counts().items():
        found[state] = found.get(state, 0) + number
    return found


def test_a_track_waits_for_its_users_identify_then_is_delivered(
        app: Flask, drift: FakeDrift, segment: FakeSegment, clock: FakeClock) -> None:
    delivery = make_delivery(app)
    send(app, track())
    delivery.run_round()
    assert states(app) == {"pending": 1}
    [waiting] = app.extensions["store"].retrying()
    assert "Drift has no contact with externalId 'user-8841'" in waiting["last_error"]

    send(app, identify())
    clock.advance(5)
    delivery.run_round()
    clock.advance(5)
    delivery.run_round()
    assert states(app) == {"delivered": 2}
    assert drift.by_external_id("user-8841") is not None
    assert [event["event"] for event in drift.timeline] == ["Order Completed"]
    assert segment.requests == 0  # this direction never posts to Segment


def test_an_unknown_user_is_dead_lettered_after_the_retry_window(
        app: Flask, drift: FakeDrift, clock: FakeClock) -> None:
    delivery = make_delivery(app)
    send(app, track("user-never"))
    delivery.run_round()
    clock.advance(30)
    delivery.run_round()
    assert states(app) == {"pending": 1}
    clock.advance(31)
    delivery.run_round()
    assert states(app) == {"dead": 1}
    [dead] = app.extensions["store"].dead_letters()
    assert dead["last_error"] == ("Drift API 404: Drift has no contact with externalId "
                                  "'user-never'; given up 1 min after receipt "
                                  "(SEGMENT_UNKNOWN_USER_RETRY_MINUTES)")


def test_an_identify_without_email_for_an_unknown_user_waits_for_one(
        app: Flask, drift: FakeDrift) -> None:
    send(app, identify("user-new", name="No Email"))
    make_delivery(app).run_round()
    [waiting] = app.extensions["store"].retrying()
    assert "carries no email to create one with" in waiting["last_error"]
    assert [call["request"].split(" ")[0] for call in drift.calls] == ["GET"]


def test_drift_429_is_retried_no_sooner_than_its_retry_after(
        make_app: AppFactory, drift: FakeDrift, clock: FakeClock) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url, CLOCK=clock,
                   DELIVERY_BACKOFF_MAX_SECONDS=900)
    drift.add_contact(KNOWN)
    drift.fail_next(1, 429, retry_after="30")
    delivery = make_delivery(app)
    send(app, track())
    delivery.run_round()
    [waiting] = app.extensions["store"].retrying()
    assert waiting["last_error"].startswith("Drift API 429")
    assert waiting["next_attempt_at"] >= clock.now + 30
    clock.advance(31)
    delivery.run_round()
    assert states(app) == {"delivered": 1}
    assert len(drift.timeline) == 1


@pytest.mark.parametrize("status, reason", [
    (400, "Drift API 400"),
    (403, "needs the Drift token's contact_write scope"),
])
def test_a_refusal_is_dead_lettered_with_the_reason(app: Flask, drift: FakeDrift,
                                                    status: int, reason: str) -> None:
    drift.add_contact(KNOWN)
    drift.fail_next(1, status)
    send(app, identify())
    make_delivery(app).run_round()
    assert states(app) == {"dead": 1}
    assert reason in app.extensions["store"].dead_letters()[0]["last_error"]


def test_unknown_users_are_answers_not_an_outage(app: Flask) -> None:
    for n in range(5):
        send(app, track(f"user-{n}", f"t-{n}"))
    delivery = make_delivery(app)
    delivery.run_round()
    assert states(app) == {"pending": 5}
    assert not delivery.breakers.is_open(drift_key(0))


def test_a_drift_outage_opens_the_circuit_and_costs_no_dead_letter(
        app: Flask, drift: FakeDrift, clock: FakeClock) -> None:
    drift.add_contact(KNOWN)
    drift.fail_next(1000, 503)
    for n in range(6):
        send(app, track(message_id=f"t-{n}"))
    delivery = make_delivery(app)
    delivery.run_round()
    assert delivery.breakers.is_open(drift_key(0))
    assert states(app) == {"pending": 6}
    drift.fail_next(0)
    clock.advance(60)
    delivery.run_round()
    delivery.run_round()
    assert states(app) == {"delivered": 6}
    assert len(drift.timeline) == 6


def test_without_a_drift_token_segment_messages_are_held(
        make_app: AppFactory, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                   DRIFT_ACCESS_TOKEN=None)
    send(app, track())
    make_delivery(app).run_round()
    assert app.extensions["store"].held_by_reason() == {"no_drift_token": 1}
    assert drift.calls == []


def test_a_slow_write_finishes_beside_the_round_and_is_made_once(
        make_app: AppFactory, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                   DELIVERY_LOOKUP_WAIT_SECONDS=0.05)
    drift.add_contact(KNOWN)
    drift.delay_every = 0.5
    send(app, track())
    delivery = make_delivery(app)
    delivery.run_round()
    assert states(app) == {"pending": 1}  # back in the store while the write runs
    with app.extensions["store"].engine.connect() as connection:
        # Waiting for the write spends no attempt.
        assert connection.execute(text("SELECT attempts FROM webhooks")).scalar() == 0
    deadline = time.monotonic() + 10
    while delivery.lookups.pool.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    delivery.run_round()
    assert states(app) == {"delivered": 1}
    assert len(drift.timeline) == 1


def test_rows_whose_retries_fall_on_one_time_are_all_recorded(
        make_app: AppFactory, drift: FakeDrift, clock: FakeClock) -> None:
    """Rows at different attempts told the same Retry-After are due at the same time: every
    one of them is recorded, none left leased until its lease runs out."""
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url, CLOCK=clock,
                   DELIVERY_BACKOFF_MAX_SECONDS=900)
    drift.add_contact(KNOWN)
    delivery = make_delivery(app)
    drift.fail_next(1, 429, retry_after="5")
    send(app, track(message_id="t-1"))
    delivery.run_round()  # t-1 is now at its first attempt, retried in 5 s
    send(app, track(message_id="t-ok"))
    delivery.run_round()  # a success in between keeps the Drift circuit closed
    clock.advance(6)
    send(app, track(message_id="t-2"))
    drift.fail_next(2, 429, retry_after="30")
    delivery.run_round()  # t-1 (second attempt) and t-2 (first): both told 30 s
    with app.extensions["store"].engine.connect() as connection:
        leased = connection.execute(text(
            "SELECT count(*) FROM webhooks WHERE lease_owner IS NOT NULL")).scalar()
    assert leased == 0
    assert len(app.extensions["store"].retrying()) == 2


# -- DriftWrites against a stub of the Drift client ------------------------------------------














