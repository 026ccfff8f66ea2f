"""Outages end fast (docs/reliability.md#circuit-breakers): a circuit breaker per destination
stops spending attempts while it is down, lets one probe through at a time, and makes the
waiting rows due at once when the probe succeeds."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.breakers import (
    FAILURES_TO_OPEN,
    PARK_SECONDS,
    PROBE_SECONDS,
)

from ..support.clock import FakeClock
from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .conftest import AppFactory, webhook


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift() as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, drift: FakeDrift,
        clock: FakeClock) -> Flask:
    # Small batches, so one round makes several posts; backoff of minutes, as in production.
    return make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url, CLOCK=clock,
                    DELIVERY_BATCH_SIZE=5, DELIVERY_BACKOFF_SECONDS=60,
                    DELIVERY_BACKOFF_MAX_SECONDS=900)


def post_conversations(app: Flask, count: int) -> list[int]:
    ids = []
    for number in range(count):
        answer = app.test_client().post("/webhooks/drift", json=webhook(
            "new_conversation", {"id": number + 1, "contactId": 500 + number,
                                 "createdAt": 1714419312425 + number}))
        ids.append(answer.get_json()["id"])
    return ids


def rows(app: Flask) -> list[dict[str, Any]]:
    with app.extensions["store"].engine.connect() as connection:
        return [dict(row) for row in connection.exec_driver_sql(
            "SELECT id, state, attempts, next_attempt_at, last_error FROM webhooks "
            "ORDER BY id").mappings()]


def run_until_idle(app: Flask, clock: FakeClock, seconds: float, step: float = 1.0) -> None:
    """Run a round every ``step`` simulated seconds for ``seconds``."""
    delivery = make_delivery(app)
    for _ in range(int(seconds / step)):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(step)


def test_an_outage_spends_no_attempts_once_the_circuit_is_open(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    post_conversations(app, 40)
    segment.fail_always(503)
    delivery = make_delivery(app)
    for _ in range(600):  # ten simulated minutes, a round a second
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    attempts = [row["attempts"] for row in rows(app)]
    # Only the batches that opened the circuit, and one row per probe, cost an attempt.
    probes = 600 / PROBE_SECONDS + 1
    assert sum(attempts) <= FAILURES_TO_OPEN * 5 + probes
    assert segment.requests <= FAILURES_TO_OPEN + probes
    answer = app.test_client().get("/readyz").get_json()
    assert answer["checks"]["circuits"]["segment"] == 1


def test_when_the_probe_succeeds_every_waiting_row_goes_at_once(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    post_conversations(app, 40)
    segment.fail_always(503)
    delivery = make_delivery(app)
    for _ in range(1200):  # twenty minutes of outage
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    # One row waits for the next probe (it becomes the probe); the others wait for the
    # recovery to call them, not to be claimed and parked again every probe interval; none
    # waits for a backoff of minutes.
    waits = sorted(row["next_attempt_at"] - clock.now for row in rows(app))
    assert waits[0] <= PROBE_SECONDS
    assert sum(wait <= PROBE_SECONDS for wait in waits) <= len(waits) // 4, str(waits)
    assert waits[-1] <= PARK_SECONDS
    segment.recover()
    recovered_at = clock.now
    while any(row["state"] != "delivered" for row in rows(app)):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(0.5)
        assert clock.now - recovered_at <= PROBE_SECONDS + 5, "the backlog did not resume"
    assert len(segment.message_id_counts()) == 40
    assert app.extensions["store"].open_breakers() == {}


def test_one_orgs_failing_drift_api_parks_only_its_lookup_rows(
        app: Flask, segment: FakeSegment, drift: FakeDrift, clock: FakeClock) -> None:
    for number in range(8):
        drift.status[str(900 + number)] = 503
        app.test_client().post("/webhooks/drift", json=webhook(
            "conversation_participant_added", {"conversationId": 900 + number,
                                               "changedAt": 1714422673598,
                                               "addedParticipants": [1]}))
    good = post_conversations(app, 5)
    delivery = make_delivery(app)
    for _ in range(30):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    by_id = {row["id"]: row for row in rows(app)}
    assert all(by_id[webhook_id]["state"] == "delivered" for webhook_id in good)
    parked = [row for row in by_id.values() if row["state"] == "pending"]
    assert len(parked) == 8
    assert any(row["last_error"].startswith("waiting for the Drift API") for row in parked)
    calls_while_open = len(drift.calls)
    for _ in range(20):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    # One lookup per probe (the Drift client makes one quick retry of a 503: two calls).
    assert len(drift.calls) - calls_while_open <= 2 * (20 / PROBE_SECONDS + 1), \
        "one probe at a time"
    # Drift recovers: the next probe succeeds and every parked row goes at once.
    drift.status.clear()
    for number in range(8):
        drift.conversations[str(900 + number)] = {"id": 900 + number, "contactId": 77}
    for _ in range(int(PROBE_SECONDS * 2) + 4):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    assert {row["state"] for row in rows(app)} == {"delivered"}


def test_lookups_queued_before_the_circuit_opened_are_not_made_while_it_is_open(
        make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    """Each lookup of a hung Drift API holds a slot for its timeout; once the org's circuit
    is open, the ones still queued must not each wait it out in turn (other orgs' lookups
    and Drift writes queue behind them)."""
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                   DRIFT_TIMEOUT_SECONDS=0.3, DELIVERY_BATCH_SIZE=100)
    conversations = 40
    for number in range(conversations):
        drift.delay[str(900 + number)] = 2.0
        app.test_client().post("/webhooks/drift", json=webhook(
            "conversation_participant_added", {"conversationId": 900 + number,
                                               "changedAt": 1714422673598,
                                               "addedParticipants": [1]}))
    delivery = make_delivery(app)
    delivery.run_round()
    deadline = time.monotonic() + 10
    while delivery.lookups.pool.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivery.lookups.pool.running() == 0
    assert delivery.breakers.is_open("drift:5000883")
    # The lookups running when the circuit opened (8, and the few that threads freed by
    # the first failures took), each with the client's one quick retry; all 40 queued
    # lookups would have made 80 calls.
    assert len(drift.calls) <= 2 * (8 + FAILURES_TO_OPEN), len(drift.calls)
    delivery.run_round()
    assert {row["state"] for row in rows(app)} == {"pending"}
    # Only the failures that opened the circuit spent an attempt; the rest wait for a probe.
    reasons = Counter(row["last_error"].split(":")[0] for row in rows(app))
    assert reasons["waiting for the Drift API"] >= conversations - FAILURES_TO_OPEN, reasons


def test_a_segment_that_hangs_opens_its_circuit_at_the_first_timeout(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    """Each post to a host that does not answer holds its round for the whole timeout (and
    in app mode, the rows of every other org in that round): one is enough to know."""
    app = make_app(SEGMENT_HOST=segment.url, SEGMENT_TIMEOUT_SECONDS=0.3, DELIVERY_BATCH_SIZE=2,
                   CLOCK=clock)
    post_conversations(app, 6)
    segment.delay = 1.0
    delivery = make_delivery(app)
    delivery.run_round()
    assert len(app.extensions["store"].open_breakers()) == 1
    for _ in range(3):  # within PROBE_SECONDS: parked, not posted
        clock.advance(0.2)
        delivery.run_round()
    time.sleep(segment.delay + 0.5)  # the fake counts a request once it has answered it
    assert segment.requests == 1
    waiting = [row for row in rows(app) if row["last_error"] is not None]
    assert waiting and all(row["last_error"].startswith("waiting for Segment")
                           for row in waiting)






def test_open_circuits_show_on_metrics_and_status(make_app: AppFactory, segment: FakeSegment,
                                                  clock: FakeClock) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, ADMIN_TOKEN="admin-token-123456",
                   DELIVERY_BATCH_SIZE=1)
    post_conversations(app, 5)
    segment.fail_always(503)
    delivery = make_delivery(app)
    for _ in range(5):
        delivery.run_round()
        delivery.drain(10)  # simulated time passes while the probe runs
        clock.advance(1)
    scrape = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'drift_segment_source_open_circuits{destination="segment"} 1.0' in scrape
    status = app.test_client().get("/status.json", headers={
        "Authorization": "Bearer admin-token-123456"}).get_json()
    assert [circuit["destination"].split(":")[0] for circuit in status["open_circuits"]] == [
        "segment"]
    assert json.dumps(status).count("waiting for Segment") >= 1


def test_a_circuit_left_open_by_another_loop_clears_when_segment_answers(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    """Breakers live in each loop; the record in the store is shared. A loop that opened
    one and then stopped (a restart, another worker) must not leave /readyz and /metrics
    saying "open" for ever once Segment answers the loop that runs now."""
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DELIVERY_BATCH_SIZE=1)
    post_conversations(app, 6)
    segment.fail_always(503)
    before_restart = make_delivery(app)
    for _ in range(FAILURES_TO_OPEN + 1):
        before_restart.run_round()
        clock.advance(1)
    assert app.extensions["store"].open_breakers() != {}
    segment.recover()
    after_restart = make_delivery(app)
    for _ in range(20):
        after_restart.run_round()
        clock.advance(1)
    assert {row["state"] for row in rows(app)} == {"delivered"}
    assert app.extensions["store"].open_breakers() == {}
    assert app.test_client().get("/readyz").get_json()["checks"]["circuits"]["open"] == 0
    scrape = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'drift_segment_source_open_circuits{destination="segment"} 0.0' in scrape


def test_a_loop_whose_circuit_never_opened_calls_the_rows_another_loop_parked(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    first, second = make_delivery(app), make_delivery(app)
    post_conversations(app, 1)
    second.run_round()  # the second loop has posted to this destination before
    second.drain(10)
    second.run_round()  # (and seen its own success)
    assert len(segment.message_id_counts()) == 1
    segment.fail_always(503)
    # More webhooks, all claimed by the first loop, whose circuit opens.
    for number in range(30):
        app.test_client().post("/webhooks/drift", json=webhook(
            "new_conversation", {"id": 100 + number, "contactId": 900 + number,
                                 "createdAt": 1714419312425 + number}))
    for _ in range(10):
        first.run_round()
        first.drain(10)
        clock.advance(1)
    assert app.extensions["store"].open_breakers(), "the first loop's circuit is open"
    parked_long = [row for row in rows(app) if row["next_attempt_at"] - clock.now > 10]
    assert len(parked_long) >= 20, rows(app)
    segment.recover()
    recovered_at = clock.now
    # Only the second loop runs now: it posts the row kept for the probe, and its success
    # calls the others, parked for a minute by the first loop.
    while any(row["state"] != "delivered" for row in rows(app)):
        second.run_round()
        second.drain(10)
        clock.advance(0.5)
        assert clock.now - recovered_at <= PROBE_SECONDS + 5, "the backlog did not resume"
    assert len(segment.message_id_counts()) == 31
