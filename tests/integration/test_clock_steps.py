"""Time cannot lie for long: a step of the host clock, either way, loses nothing, refuses
nothing that would be accepted once the clock is right, deletes nothing early, and delays
delivery by no more than a probe interval.

The service runs on its real clock (``SystemClock``) over host clocks the test moves: the
wall clock steps, the monotonic clock only ticks.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.clock import ADOPT_AFTER_SECONDS, SystemClock
from drift_segment_source.delivery.breakers import PROBE_SECONDS
from drift_segment_source.delivery.loop import Delivery

from ..support.fake_segment import FakeSegment
from .conftest import AppFactory, webhook

DAY = 86_400.0


class Host:
    """The host's wall and monotonic clocks, moved by the test."""

    def __init__(self) -> None:
        self.wall = 1_750_000_000.0
        self.monotonic = 50_000.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds

    def clock(self) -> SystemClock:
        """A new process's clock (it trusts the host's wall clock as it is at its start)."""
        return SystemClock(lambda: self.wall, lambda: self.monotonic)


@pytest.fixture
def host() -> Host:
    return Host()


def conversation(number: int, host: Host) -> dict[str, Any]:
    """A conversation Drift says started a second before the test began."""
    return webhook("new_conversation", {"id": number, "contactId": 700 + number,
                                        "createdAt": 1_749_999_999_000})


def post(app: Flask, body: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = app.test_client().post("/webhooks/drift", json=body).get_json()
    return answer


def everything_kept(app: Flask) -> dict[str, int]:
    store = app.extensions["store"]
    return {"dead": len(store.dead_letters()), "quarantined": len(store.quarantined()),
            "held": sum(store.held_by_reason().values())}


def setup_every_state(app: Flask, segment: FakeSegment, host: Host) -> None:
    """One delivered webhook, one dead letter, one quarantined payload, one held row."""
    assert post(app, conversation(1, host))["status"] == "accepted"
    make_delivery(app).run_round()
    segment.fail_next(1, 400)
    assert post(app, conversation(2, host))["status"] == "accepted"
    make_delivery(app).run_round()
    post(app, webhook("new_conversation", {"id": "not an id"}))
    post(app, webhook("conversation_participant_added", {
        "conversationId": 5, "changedAt": 1714422673598, "addedParticipants": [1]}))
    make_delivery(app).run_round()
    assert everything_kept(app) == {"dead": 1, "quarantined": 1, "held": 1}


def test_a_clock_that_jumps_months_ahead_for_seconds_refuses_and_deletes_nothing(
        make_app: AppFactory, segment: FakeSegment, host: Host) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=host.clock(), DRIFT_ACCESS_TOKEN="")
    setup_every_state(app, segment, host)
    delivery = make_delivery(app)
    host.wall += 100 * DAY  # the step forward
    for second in range(5):
        assert post(app, conversation(10 + second, host))["status"] == "accepted"
        delivery.housekeeping.prune()
        delivery.run_round()
        host.tick(1)
    host.wall -= 100 * DAY  # and back
    answers = [post(app, conversation(20 + n, host))["status"] for n in range(10)]
    assert answers == ["accepted"] * 10
    delivery.housekeeping.prune()
    assert everything_kept(app) == {"dead": 1, "quarantined": 1, "held": 1}
    assert app.extensions["store"].dedupe_horizon() == 0.0
    with app.extensions["store"].engine.connect() as connection:
        newest = connection.exec_driver_sql("SELECT max(received_at), max(queued_at), "
                                            "max(next_attempt_at) FROM webhooks").one()
    assert max(newest) < host.wall + 60, "nothing was stamped with the clock that jumped"


def test_a_process_started_while_the_clock_is_months_ahead_deletes_nothing_early(
        make_app: AppFactory, segment: FakeSegment, host: Host) -> None:
    first = make_app(SEGMENT_HOST=segment.url, CLOCK=host.clock(), DRIFT_ACCESS_TOKEN="")
    setup_every_state(first, segment, host)
    host.wall += 100 * DAY
    # A restart now: the new process has nothing to tell it the clock is wrong but the store.
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=host.clock(), DRIFT_ACCESS_TOKEN="",
                   DATABASE_URL=first.extensions["store"].engine.url.render_as_string(
                       hide_password=False))
    make_delivery(app).housekeeping.prune()
    assert everything_kept(app) == {"dead": 1, "quarantined": 1, "held": 1}
    assert app.extensions["store"].dedupe_horizon() == 0.0
    host.wall -= 100 * DAY
    assert post(app, conversation(30, host))["status"] == "accepted"


def run_rounds(delivery: Delivery, host: Host, seconds: float, step: float = 0.5) -> None:
    """What the loop does for ``seconds``: a round (its lanes done) and the chores due."""
    for _ in range(int(seconds / step)):
        delivery.run_round()
        delivery.drain(10)
        delivery.housekeeping.now_and_then()
        host.tick(step)


def test_a_clock_step_back_during_an_outage_delays_recovery_by_no_more_than_a_probe(
        make_app: AppFactory, segment: FakeSegment, host: Host) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=host.clock())
    for number in range(20):
        post(app, conversation(number, host))
    segment.fail_always(503)
    delivery = make_delivery(app)
    run_rounds(delivery, host, 30)
    assert app.extensions["store"].open_breakers(), "the circuit is open"
    host.wall -= 3600  # the step back
    segment.recover()
    run_rounds(delivery, host, PROBE_SECONDS + 2)
    assert len({message["messageId"] for message in segment.messages}) == 20


def test_rows_waiting_when_a_step_back_is_believed_wait_no_longer_for_it(
        make_app: AppFactory, segment: FakeSegment, host: Host) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=host.clock(),
                   DELIVERY_BACKOFF_SECONDS=3000, DELIVERY_BACKOFF_MAX_SECONDS=2000)
    post(app, conversation(1, host))
    segment.fail_next(1, 503)  # due again in 25 to 33 minutes
    delivery = make_delivery(app)
    delivery.run_round()
    host.wall -= 3600  # a step back that lasts
    run_rounds(delivery, host, ADOPT_AFTER_SECONDS + 10, step=10)
    assert segment.messages == [], "not due yet"
    run_rounds(delivery, host, 2000 - ADOPT_AFTER_SECONDS, step=10)
    assert len(segment.messages) == 1, "due when its wait was up, not an hour later"
