"""Failure stays with its row (docs/reliability.md#failure-stays-with-its-row): a fault
injected at each seam of delivery (a translator, the Drift API, Segment, the transport)
affects only the row it belongs to; the others are delivered in the same round, and the round
ends well inside its lease."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.breakers import PROBE_SECONDS
from drift_segment_source.delivery.loop import Delivery
from drift_segment_source.destinations.segment import HttpTransport
from drift_segment_source.sources.drift.translators import TRANSLATORS, message_id

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .conftest import AppFactory, webhook

CONVERSATION = "3969707702"
GOOD = 30


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift() as fake:
        fake.conversations[CONVERSATION] = {"id": int(CONVERSATION), "contactId": 21760538950,
                                            "createdAt": 1714419312425, "inboxId": 642330,
                                            "status": "open", "updatedAt": 1714419467246}
        yield fake


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> Flask:
    return make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                    DRIFT_TIMEOUT_SECONDS=5, DELIVERY_LOOKUP_WAIT_SECONDS=0.2,
                    DELIVERY_BACKOFF_SECONDS=0.01, DELIVERY_BACKOFF_MAX_SECONDS=0.05)


def post(app: Flask, body: dict[str, Any]) -> int:
    answer = app.test_client().post("/webhooks/drift", json=body)
    assert answer.status_code == 200, answer.get_json()
    webhook_id: int = answer.get_json()["id"]
    return webhook_id


def post_good(app: Flask, count: int = GOOD) -> list[int]:
    """Webhooks that need no lookup and have nothing wrong with them."""
    return [post(app, webhook("new_conversation", {"id": 100 + n, "contactId": 5000 + n,
                                                   "createdAt": 1714419312425 + n}))
            for n in range(count)]


def participant(conversation_id: str = CONVERSATION) -> dict[str, Any]:
    return webhook("conversation_participant_added", {
        "conversationId": int(conversation_id), "changedAt": 1714422673598,
        "addedParticipants": [2322756]})


def row(app: Flask, webhook_id: int) -> dict[str, Any]:
    with app.extensions["store"].engine.connect() as connection:
        found = connection.exec_driver_sql(
            f"SELECT * FROM webhooks WHERE id = {int(webhook_id)}").mappings().one()
    return dict(found)


def delivered_ids(app: Flask, ids: list[int]) -> set[int]:
    return {webhook_id for webhook_id in ids if row(app, webhook_id)["state"] == "delivered"}


def timed_round(delivery: Delivery) -> float:
    started = time.monotonic()
    delivery.run_round()
    return time.monotonic() - started


def test_a_translator_that_raises_dead_letters_only_its_row(
        app: Flask, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    original = TRANSLATORS["playbook_goal_met"]

    def build(data: dict[str, Any], conversation: Any) -> Any:
        if data.get("goalName") == "explode":
            raise ZeroDivisionError("a translator bug")
        return original.build(data, conversation)

    monkeypatch.setitem(TRANSLATORS, "playbook_goal_met", dataclasses.replace(original,
                                                                              build=build))
    good = post_good(app)
    bad = post(app, webhook("playbook_goal_met", {"conversationId": 1, "contactId": 2,
                                                  "goalId": "g", "goalName": "explode"}))
    make_delivery(app).run_round()
    assert delivered_ids(app, good) == set(good)
    assert row(app, bad)["state"] == "dead"
    assert "ZeroDivisionError" in row(app, bad)["last_error"]
    assert len(segment.messages) == GOOD


@pytest.mark.parametrize("event", ["phone_captured", "conversation_participant_added"])
def test_a_conversation_without_a_contact_dead_letters_its_row_and_sends_no_none(
        app: Flask, segment: FakeSegment, drift: FakeDrift, event: str) -> None:
    drift.conversations["777"] = {"id": 777, "status": "open"}  # no contactId
    body = (webhook("phone_captured", {"conversationId": 777, "authorType": "user",
                                       "authorId": 9, "phoneNumber": "+1 555 0100"})
            if event == "phone_captured" else participant("777"))
    bad = post(app, body)
    good = post_good(app)
    make_delivery(app).run_round()
    assert delivered_ids(app, good) == set(good)
    assert row(app, bad)["state"] == "dead"
    assert "no Drift contact id" in row(app, bad)["last_error"]
    anonymous_ids = {message["anonymousId"] for message in segment.messages}
    assert not anonymous_ids & {"None", "null", ""}


def test_a_hanging_drift_api_delays_only_the_rows_that_need_it(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    drift.delay[CONVERSATION] = 3.0
    slow = post(app, participant())
    good = post_good(app)
    delivery = make_delivery(app)
    took = timed_round(delivery)
    assert took < 1.5, "the round waited for the hanging lookup"
    assert delivered_ids(app, good) == set(good)
    waiting = row(app, slow)
    assert waiting["state"] == "pending" and waiting["lease_owner"] is None
    assert waiting["attempts"] == 0, "waiting for a lookup spends no attempt"
    # When the lookup ends the row is due at once, not after a backoff.
    assert delivery.lookup_ended.wait(10)
    delivery.run_round()
    assert row(app, slow)["state"] == "delivered"
    assert drift.paths().count(f"/conversations/{CONVERSATION}") == 1


def test_a_lookup_slower_than_its_timeout_is_retried_and_others_go_on(
        make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                   DRIFT_TIMEOUT_SECONDS=0.5, DELIVERY_LOOKUP_WAIT_SECONDS=0.1)
    drift.delay[CONVERSATION] = 2.0
    slow = post(app, participant())
    good = post_good(app)
    delivery = make_delivery(app)
    delivery.run_round()
    assert delivered_ids(app, good) == set(good)
    assert delivery.lookup_ended.wait(10)
    delivery.run_round()
    assert row(app, slow)["state"] == "pending"
    assert "network error" in row(app, slow)["last_error"]
    assert row(app, slow)["attempts"] == 1


@pytest.mark.parametrize("garbage", [b"not json", b"[" * 5000 + b"]" * 5000,
                                     b'{"data": "a string"}', b"[1, 2]"])
def test_a_garbage_drift_answer_retries_only_that_row(
        app: Flask, segment: FakeSegment, drift: FakeDrift, garbage: bytes) -> None:
    drift.garbage[CONVERSATION] = garbage
    bad = post(app, participant())
    good = post_good(app)
    delivery = make_delivery(app)
    delivery.run_round()
    if row(app, bad)["attempts"] == 0:  # the lookup outlived the round's short wait
        assert delivery.lookup_ended.wait(10)
        delivery.run_round()
    assert delivered_ids(app, good) == set(good)
    failed = row(app, bad)
    assert failed["state"] == "pending" and failed["lease_owner"] is None
    assert failed["last_error"]


def test_a_garbage_segment_answer_is_retried_without_freezing_the_round(
        app: Flask, segment: FakeSegment) -> None:
    good = post_good(app)
    segment.failure_body = b"[" * 5000 + b"]" * 5000  # JSON the library cannot read
    segment.fail_next(1, 503)
    delivery = make_delivery(app)
    delivery.run_round()
    assert {row(app, webhook_id)["state"] for webhook_id in good} == {"pending"}
    assert all(row(app, webhook_id)["lease_owner"] is None for webhook_id in good)
    assert "unreadable answer" in row(app, good[0])["last_error"]
    time.sleep(0.1)
    delivery.run_round()
    assert delivered_ids(app, good) == set(good)


def test_a_hanging_segment_ends_the_round_inside_its_lease(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, SEGMENT_TIMEOUT_SECONDS=1,
                   DELIVERY_LEASE_SECONDS=6, DELIVERY_BATCH_SIZE=40)
    good = post_good(app, 40)
    segment.delay = 3.0
    delivery = make_delivery(app)
    took = timed_round(delivery)
    assert took < 6, "the round outlived its lease"
    assert {row(app, webhook_id)["state"] for webhook_id in good} == {"pending"}
    assert all(row(app, webhook_id)["lease_owner"] is None for webhook_id in good)
    # A post that got no answer in time opened the circuit: the rows wait for its probe.
    assert delivery.breakers.is_open(next(iter(app.extensions["store"].open_breakers())))
    segment.delay = 0
    deadline = time.monotonic() + PROBE_SECONDS * 3
    while delivered_ids(app, good) != set(good) and time.monotonic() < deadline:
        time.sleep(0.1)
        delivery.run_round()
    assert delivered_ids(app, good) == set(good)


class ExplodingTransport(HttpTransport):
    """Raises what no transport should for any batch holding one message."""

    def __init__(self, poison: str) -> None:
        super().__init__(timeout=5)
        self.poison = poison

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        if any(message["properties"].get("status") == self.poison for message in batch):
            raise TypeError("a bug in the transport")
        super().post(write_key, host, batch)


def test_a_transport_that_raises_unexpectedly_holds_back_only_the_message_at_fault(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, TRANSPORT=ExplodingTransport("poison"))
    good = post_good(app)
    bad = post(app, webhook("new_conversation", {"id": 1, "contactId": 2, "status": "poison"}))
    make_delivery(app).run_round()
    assert delivered_ids(app, good) == set(good)
    failed = row(app, bad)
    assert failed["state"] == "pending", "an unexplained failure is retried, never dropped"
    assert "TypeError" in failed["last_error"]


def test_one_rows_retry_after_is_not_every_rows_and_is_capped(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_BACKOFF_SECONDS=1,
                   DELIVERY_BACKOFF_MAX_SECONDS=60)
    good = post_good(app, 5)
    segment.fail_next(1, 429, retry_after="300")
    make_delivery(app).run_round()
    assert {row(app, webhook_id)["state"] for webhook_id in good} == {"pending"}
    waits = [row(app, webhook_id)["next_attempt_at"] - time.time() for webhook_id in good]
    assert max(waits) <= 60, "Retry-After is capped by DELIVERY_BACKOFF_MAX_SECONDS"
    assert min(waits) >= 50


def test_failures_are_logged_without_bodies(app: Flask, segment: FakeSegment,
                                            caplog: pytest.LogCaptureFixture) -> None:
    post(app, webhook("new_conversation", {"id": 1, "contactId": 2,
                                           "status": "secret-body-text"}))
    segment.fail_next(1, 500)
    make_delivery(app).run_round()
    assert "secret-body-text" not in json.dumps([record.__dict__ for record in caplog.records],
                                                default=str)


class SlowTransport(HttpTransport):
    """Answers after ``seconds`` whatever the timeout: a Segment trickling its answer."""

    def __init__(self, seconds: float) -> None:
        super().__init__(timeout=1)
        self.seconds = seconds

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        time.sleep(self.seconds)
        super().post(write_key, host, batch)


def test_no_post_outlives_the_lease_whatever_segment_does(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_LEASE_SECONDS=3,
                   TRANSPORT=SlowTransport(6))
    good = post_good(app, 10)
    delivery = make_delivery(app)
    took = timed_round(delivery)
    assert took < 3, "the round outlived its lease: another loop could send it again"
    assert delivery.drain(3), "the lane's posts ended inside the lease too"
    assert all(row(app, webhook_id)["state"] == "pending" and
               row(app, webhook_id)["lease_owner"] is None for webhook_id in good)
    # The post cut off at the round's deadline counts as no answer: the circuit opens.
    assert "not answering (circuit open)" in row(app, good[0])["last_error"]
    assert len(app.extensions["store"].open_breakers()) == 1


def test_a_refused_batch_the_round_has_no_time_to_split_goes_back_untried(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_LEASE_SECONDS=2.4)
    good = post_good(app, 10)
    first = row(app, good[0])
    segment.delay = 1.0  # the first post ends after the round's deadline (0.8 s)
    with app.extensions["store"].engine.connect() as connection:
        payload = connection.exec_driver_sql(
            f"SELECT payload FROM webhooks WHERE id = {first['id']}").scalar_one()
    data = json.loads(payload)["data"]
    translator = TRANSLATORS["new_conversation"]
    segment.refuse(message_id(5000883, "new_conversation", translator.identity(data, 0), 0))
    make_delivery(app).run_round()
    states = {row(app, webhook_id)["state"] for webhook_id in good}
    assert states == {"pending"}, "no row may be dead-lettered for a message not found"
    assert {row(app, webhook_id)["attempts"] for webhook_id in good} == {0}


def test_a_redirecting_segment_host_is_an_error_not_a_delivery(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url)
    good = post_good(app, 5)
    segment.redirect_to = segment.url + "/elsewhere"  # a GET there would answer 404
    make_delivery(app).run_round()
    assert {row(app, webhook_id)["state"] for webhook_id in good} == {"pending"}
    assert "redirect" in row(app, good[0])["last_error"]
    assert segment.messages == []


def test_a_lookup_answering_a_byte_at_a_time_frees_its_slot_and_is_retried() -> None:
    from drift_segment_source.deadlines import TookTooLong
    from drift_segment_source.delivery.lookups import Lookups

    lookups = Lookups(max_running=1, limit_seconds=0.3)
    hanging = lookups.start(("conversation", 1, "slow"), lambda: time.sleep(5))
    quick = lookups.start(("conversation", 1, "quick"), lambda: "answer")
    assert hanging is not None and quick is not None
    assert isinstance(hanging.exception(timeout=2), TookTooLong)
    assert quick.result(timeout=2) == "answer", "the one slot went on to the next lookup"


def test_garbled_retry_after_and_refresh_answers_are_retried(
        app: Flask, segment: FakeSegment, drift: FakeDrift,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from drift_segment_source.drift_api import seconds

    assert [seconds(value) for value in ("30", "2.5", "²", "", "nan", "-1")] == [
        30.0, 2.5, None, None, None, None]
    delivery = make_delivery(app)
    # A lookup that raises what no Drift client should (a refresh that hit RecursionError).
    monkeypatch.setattr(delivery.lookups.drift_api, "conversation",
                        lambda *args: (_ for _ in ()).throw(RecursionError("deep")))
    bad = post(app, participant())
    good = post_good(app, 5)
    delivery.run_round()
    assert delivered_ids(app, good) == set(good)
    assert row(app, bad)["state"] == "pending"
    assert "RecursionError" in row(app, bad)["last_error"]
