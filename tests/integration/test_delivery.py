"""The delivery loop: at-least-once to Segment, retries with backoff, holds, dead letters."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.loop import Delivery
from drift_segment_source.delivery.outcomes import RetryPolicy
from drift_segment_source.sources.drift.translators import message_id
from drift_segment_source.startup import announce

from ..support.clock import FakeClock
from ..support.fake_segment import FakeSegment
from .conftest import DRIFT_API_URL, FIXTURES, WRITE_KEY, AppFactory, seen_now, webhook


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> Flask:
    return make_app(SEGMENT_HOST=segment.url, CLOCK=clock)


def fixture_body(event_type: str, case: str = "seed_example") -> bytes:
    return (FIXTURES / event_type / f"{case}.json").read_bytes()


def post(app: Flask, body: Any) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = app.test_client().post("/webhooks/drift", data=data,
                                    content_type="application/json")
    result: dict[str, Any] = answer.get_json()
    return result


def conversations(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [webhook("new_conversation", {"id": start + n, "contactId": 1000 + n,
                                         "createdAt": 1714419312425 + n})
            for n in range(count)]


def states(app: Flask) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, state), count in app.extensions["store"].counts().items():
        totals[state] = totals.get(state, 0) + count
    return totals


def row(app: Flask, webhook_id: int) -> dict[str, Any]:
    with app.extensions["store"].engine.connect() as connection:
        result = connection.exec_driver_sql(
            "SELECT * FROM webhooks WHERE id = " + str(int(webhook_id))).mappings().one()
    return dict(result)


def test_accepted_webhooks_are_delivered_and_marked(app: Flask, segment: FakeSegment) -> None:
    for body in conversations(5):
        assert post(app, body)["status"] == "accepted"
    assert make_delivery(app).run_round() == 5
    assert len(segment.messages) == 5
    assert segment.write_keys() == {WRITE_KEY}
    assert states(app) == {"delivered": 5}


def test_many_rows_go_out_in_few_batches(make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_BATCH_SIZE=300)
    for body in conversations(300):
        post(app, body)
    make_delivery(app).run_round()
    assert len(segment.batches) == 1 and len(segment.messages) == 300


def test_dry_run_logs_messages_and_sends_nothing(make_app: AppFactory, segment: FakeSegment,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(SEGMENT_WRITE_KEY="", SEGMENT_HOST=segment.url)
    post(app, fixture_body("new_conversation"))
    with caplog.at_level(logging.INFO, logger="drift_segment_source"):
        make_delivery(app).run_round()
    assert segment.requests == 0
    assert states(app) == {"dry_run": 1}
    logged = [record for record in caplog.records if "dry-run" in record.getMessage()]
    assert logged[0].segment_message["event"] == "Drift Source Event: new_conversation"


def test_a_restart_without_the_write_key_holds_the_backlog_taken_in_with_it(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    first = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    for body in conversations(3):
        post(first, body)
    segment.fail_always(503)
    make_delivery(first).run_round()
    assert states(first) == {"pending": 3}
    url = first.extensions["store"].engine.url.render_as_string(hide_password=False)
    # The operator restarts without SEGMENT_WRITE_KEY: what came in with it is held for it.
    keyless = make_app(SEGMENT_WRITE_KEY="", SEGMENT_HOST=segment.url, CLOCK=clock,
                       DATABASE_URL=url)
    post(keyless, conversations(1, start=10)[0])
    clock.advance(60)
    make_delivery(keyless).run_round()
    assert states(keyless) == {"held": 3, "dry_run": 1}
    assert keyless.extensions["store"].held_by_reason() == {"no_write_key": 3}
    readiness = keyless.test_client().get("/readyz").get_json()
    assert any("no_write_key" in warning and "SEGMENT_WRITE_KEY" in warning
               for warning in readiness["warnings"])
    # With the key back, they are delivered, each once, even while the process without it
    # still runs and holds them again (a rolling restart): the keyed one releases them again.
    segment.recover()
    keyed = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DATABASE_URL=url)
    delivery = make_delivery(keyed)
    make_delivery(keyless).run_round()
    assert states(keyed) == {"held": 3, "dry_run": 1}
    delivery.housekeeping.now_and_then()
    delivery.run_round()
    assert states(keyed) == {"delivered": 3, "dry_run": 1}
    assert len(segment.message_id_counts()) == 3


def test_a_service_without_the_write_key_never_dry_runs_what_one_with_it_took_in(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    keyed = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    url = keyed.extensions["store"].engine.url.render_as_string(hide_password=False)
    # A dry run left running on the same store (another port) holds the delivery lease.
    keyless = make_app(SEGMENT_WRITE_KEY="", SEGMENT_HOST=segment.url, CLOCK=clock,
                       DATABASE_URL=url)
    for body in conversations(4):
        post(keyed, body)
    dry_run = make_delivery(keyless)
    for _ in range(3):  # held, released by the keyed process, held again: no attempt spent
        dry_run.run_round()
        keyed.extensions["store"].release_held("no_write_key")
    dry_run.run_round()
    assert states(keyed) == {"held": 4}
    assert segment.requests == 0
    with keyed.extensions["store"].engine.connect() as connection:
        attempts = connection.exec_driver_sql("SELECT attempts FROM webhooks").scalars().all()
    assert attempts == [0, 0, 0, 0]
    [warning] = keyed.test_client().get("/readyz").get_json()["warnings"]
    assert "a process on the same store runs without SEGMENT_WRITE_KEY" in warning
    make_delivery(keyed).run_round()  # once it delivers (the dry run stopped)
    assert states(keyed) == {"delivered": 4}


def test_dry_run_is_announced_loudly_at_start(make_app: AppFactory,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    app = make_app(SEGMENT_WRITE_KEY="")
    capfd.readouterr()
    announce(app.config)  # gunicorn's when_ready and `worker` say it once, at start
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert any(line["level"] == "WARNING" and "DRY-RUN" in line["message"] for line in lines)


def test_segment_outage_reschedules_with_backoff_then_delivers(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    for body in conversations(3):
        post(app, body)
    segment.fail_always(503)
    delivery = make_delivery(app)
    delivery.run_round()
    assert states(app) == {"pending": 3}
    assert delivery.run_round() == 0, "backoff: not due yet"
    segment.recover()
    clock.advance(1)
    assert delivery.run_round() == 3
    assert states(app) == {"delivered": 3}
    assert segment.message_id_counts().most_common(1)[0][1] == 1


def test_retry_after_is_honoured(make_app: AppFactory, segment: FakeSegment,
                                clock: FakeClock) -> None:
    # Under the ceiling (which caps it: Drift's Retry-After has no bound).
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DELIVERY_BACKOFF_MAX_SECONDS=900)
    [body] = conversations(1)
    webhook_id = post(app, body)["id"]
    segment.fail_next(1, status=429, retry_after="120")
    make_delivery(app).run_round()
    assert row(app, webhook_id)["next_attempt_at"] >= clock.now + 120 - 0.01
    assert "429" in row(app, webhook_id)["last_error"]


def test_backoff_grows_with_attempts_and_has_a_ceiling() -> None:
    policy = RetryPolicy(base_seconds=10, ceiling_seconds=60, max_attempts=100)
    # A row's own failures (the destination's circuit stays closed: see test_breakers.py).
    delays = [policy.delay(attempts, None) for attempts in range(1, 9)]
    assert all(0 < delay <= 60 for delay in delays)
    assert max(delays[4:]) > max(delays[:1])
    assert policy.delay(1, 30) == 30 and policy.delay(1, 10**9) == 60


def test_refused_message_is_isolated_and_only_it_is_dead_lettered(
        make_app: AppFactory, segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_BATCH_SIZE=100)
    bodies = conversations(100)
    for body in bodies:
        post(app, body)
    poisoned = message_id(5000883, "new_conversation", [bodies[37]["data"]["id"]], 0)
    segment.refuse(poisoned)
    make_delivery(app).run_round()
    assert states(app) == {"delivered": 99, "dead": 1}
    assert len(segment.messages) == 99 == len(segment.message_id_counts())
    assert poisoned not in segment.message_id_counts()
    [dead] = app.extensions["store"].dead_letters()
    assert "400" in dead["last_error"]


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_non_retryable_answers_dead_letter_with_the_reason(app: Flask, segment: FakeSegment,
                                                           status: int) -> None:
    webhook_id = post(app, conversations(1)[0])["id"]
    segment.fail_next(1, status=status)
    make_delivery(app).run_round()
    assert row(app, webhook_id)["state"] == "dead"
    assert str(status) in row(app, webhook_id)["last_error"]


def test_rows_out_of_attempts_are_dead_lettered(make_app: AppFactory, segment: FakeSegment,
                                                clock: FakeClock) -> None:
    # Fewer attempts than it takes to open the circuit (after which none is spent).
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DELIVERY_MAX_ATTEMPTS=2)
    webhook_id = post(app, conversations(1)[0])["id"]
    segment.fail_always(502)
    delivery = make_delivery(app)
    for _ in range(2):
        delivery.run_round()
        clock.advance(10)
    assert row(app, webhook_id)["state"] == "dead"
    assert "gave up after 2 attempts" in row(app, webhook_id)["last_error"]


def test_rows_older_than_the_max_age_that_still_fail_are_dead_lettered(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DELIVERY_MAX_AGE_HOURS=1)
    failing = post(app, conversations(1)[0])["id"]
    clock.advance(3601)
    segment.fail_next(1, 503)
    make_delivery(app).run_round()
    assert row(app, failing)["state"] == "dead"
    assert row(app, failing)["last_error"].startswith("undelivered after 1 hours: Segment 503")


def test_rows_older_than_the_max_age_that_can_be_delivered_are(
        make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> None:
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, DELIVERY_MAX_AGE_HOURS=1)
    old = post(app, conversations(1)[0])["id"]
    clock.advance(3601)  # a long outage just ended, or a clock that jumped ahead
    make_delivery(app).run_round()
    assert row(app, old)["state"] == "delivered"


def test_a_webhook_whose_message_would_be_over_32_kb_is_refused_at_the_door(
        app: Flask) -> None:
    body = json.loads(fixture_body("button_clicked"))
    body["data"]["body"] = "é" * 12_000  # 24 KB of UTF-8, 72 KB once JSON-escaped
    answer = app.test_client().post("/webhooks/drift", json=body)
    assert answer.status_code == 422
    assert "32 KB" in json.dumps(answer.get_json())
    assert answer.get_json()["quarantineId"]
    assert app.extensions["store"].counts() == {}


def test_a_large_webhook_under_the_limit_is_accepted(app: Flask, segment: FakeSegment) -> None:
    body = json.loads(fixture_body("button_clicked"))
    body["data"]["body"] = "x" * 30_000
    assert post(app, body)["status"] == "accepted"
    make_delivery(app).run_round()
    assert len(segment.messages) == 1


def test_oversize_message_from_the_drift_api_is_dead_lettered_and_the_loop_goes_on(
        app: Flask, segment: FakeSegment, drift: responses.RequestsMock) -> None:
    # Only the Drift API can make a message grow past what the door measured.
    drift.get(f"{DRIFT_API_URL}/conversations/3969707702",
              json={"data": {**conversation_answer()["data"],
                             "participants": list(range(10**12, 10**12 + 3000))}})
    big = post(app, webhook("conversation_push", {
        "conversationId": 3969707702, "pushedAt": 1714421087350,
        "source": "conversation_manual_push"}))["id"]
    post(app, conversations(1)[0])
    make_delivery(app).run_round()
    assert row(app, big)["state"] == "dead"
    assert "32 KB" in row(app, big)["last_error"]
    assert len(segment.messages) == 1


def test_dead_letters_can_be_retried_with_the_same_message_ids(
        app: Flask, segment: FakeSegment) -> None:
    webhook_id = post(app, conversations(1)[0])["id"]
    segment.fail_next(1, status=400)
    make_delivery(app).run_round()
    assert row(app, webhook_id)["state"] == "dead"
    assert app.extensions["store"].retry_dead([webhook_id]) == 1
    make_delivery(app).run_round()
    assert row(app, webhook_id)["state"] == "delivered"
    [message] = segment.messages
    assert message["messageId"] == message_id(5000883, "new_conversation", [1], 0)


# -- Drift API lookups --------------------------------------------------------------------


def conversation_answer(contact_id: int = 21760538950) -> dict[str, Any]:
    return {"data": {"id": 3969707702, "contactId": contact_id, "createdAt": 1714419312425,
                     "inboxId": 642330, "status": "closed", "updatedAt": 1714419467246,
                     "participants": [2322756]}}


@pytest.fixture
def drift(segment: FakeSegment) -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False,
                                passthru_prefixes=(segment.url,)) as mock:
        yield mock


def participant_added(conversation_id: int = 3969707702, changed_at: int = 1714422673598
                      ) -> dict[str, Any]:
    return webhook("conversation_participant_added", {
        "conversationId": conversation_id, "addedParticipants": [2322756],
        "changedAt": changed_at})


def test_lookup_sends_the_bearer_token_and_is_cached(app: Flask, segment: FakeSegment,
                                                     drift: responses.RequestsMock) -> None:
    call = drift.get(f"{DRIFT_API_URL}/conversations/3969707702", json=conversation_answer())
    post(app, participant_added(changed_at=1714422673598))
    post(app, participant_added(changed_at=1714422673599))
    make_delivery(app).run_round()
    assert call.call_count == 1
    assert drift.calls[0].request.headers["Authorization"] == "Bearer drift-access-token-test"
    assert [m["anonymousId"] for m in segment.messages] == ["21760538950", "21760538950"]


def test_lookup_404_dead_letters_that_row_only(app: Flask, segment: FakeSegment,
                                               drift: responses.RequestsMock) -> None:
    drift.get(f"{DRIFT_API_URL}/conversations/1", status=404)
    missing = post(app, participant_added(conversation_id=1))["id"]
    post(app, conversations(1)[0])
    make_delivery(app).run_round()
    assert row(app, missing)["state"] == "dead"
    assert "404" in row(app, missing)["last_error"]
    assert len(segment.messages) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_lookup_failures_delay_only_the_affected_rows(app: Flask, segment: FakeSegment,
                                                      drift: responses.RequestsMock,
                                                      clock: FakeClock, status: int) -> None:
    drift.get(f"{DRIFT_API_URL}/conversations/3969707702", status=status,
              headers={"Retry-After": "30"} if status == 429 else {})
    affected = post(app, participant_added())["id"]
    post(app, conversations(1)[0])
    delivery = make_delivery(app)
    delivery.run_round()
    assert row(app, affected)["state"] == "pending"
    assert str(status) in row(app, affected)["last_error"]
    assert len(segment.messages) == 1
    drift.replace(responses.GET, f"{DRIFT_API_URL}/conversations/3969707702",
                  json=conversation_answer())
    clock.advance(31)
    delivery.run_round()
    assert row(app, affected)["state"] == "delivered"


def test_lookup_timeout_is_retried_later(app: Flask, drift: responses.RequestsMock) -> None:
    import requests

    drift.get(f"{DRIFT_API_URL}/conversations/3969707702",
              body=requests.exceptions.ConnectTimeout())
    affected = post(app, participant_added())["id"]
    make_delivery(app).run_round()
    assert row(app, affected)["state"] == "pending"
    assert "ConnectTimeout" in row(app, affected)["last_error"]


def test_without_a_drift_token_lookup_events_are_held_not_dropped(
        make_app: AppFactory, segment: FakeSegment, drift: responses.RequestsMock) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_ACCESS_TOKEN="")
    held = post(app, participant_added())["id"]
    post(app, conversations(1)[0])
    make_delivery(app).run_round()
    assert row(app, held)["state"] == "held"
    assert row(app, held)["hold_reason"] == "no_drift_token"
    assert "DRIFT_ACCESS_TOKEN" in row(app, held)["last_error"]
    assert len(segment.messages) == 1
    # Configure a token and start again: the held row is released and delivered.
    drift.get(f"{DRIFT_API_URL}/conversations/3969707702", json=conversation_answer())
    later = make_app(SEGMENT_HOST=segment.url)
    make_delivery(later).run_round()
    assert row(later, held)["state"] == "delivered"


def test_a_token_drift_rejects_holds_its_rows_with_the_reason_not_as_an_outage(
        make_app: AppFactory, segment: FakeSegment, drift: responses.RequestsMock) -> None:
    """Self-hosted, a 401 cannot be refreshed away: no circuit to wait out (the rows would
    sit "waiting for the Drift API" until the age limit), a token to replace."""
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_ACCESS_TOKEN="revoked-token")
    drift.get(f"{DRIFT_API_URL}/conversations/3969707702", status=401,
              json={"error": "invalid_token"})
    held = post(app, participant_added())["id"]
    post(app, conversations(1)[0])
    delivery = make_delivery(app)
    delivery.run_round()
    for _ in range(20):  # the lookup ends beside the round; the row is prepared again
        if row(app, held)["state"] != "pending":
            break
        delivery.lookup_ended.wait(0.1)
        delivery.run_round()
    assert row(app, held)["state"] == "held"
    assert row(app, held)["hold_reason"] == "no_drift_token"
    assert "rejected DRIFT_ACCESS_TOKEN (401)" in row(app, held)["last_error"]
    assert not delivery.breakers.is_open("drift:5000883")
    assert len(segment.messages) == 1
    # A valid token and a restart: the held row is released and delivered.
    drift.replace(responses.GET, f"{DRIFT_API_URL}/conversations/3969707702",
                  json=conversation_answer())
    later = make_app(SEGMENT_HOST=segment.url, DRIFT_ACCESS_TOKEN="new-token")
    make_delivery(later).run_round()
    assert row(later, held)["state"] == "delivered"


# -- claiming -----------------------------------------------------------------------------


def test_claimed_rows_are_invisible_to_other_loops_until_the_lease_expires(
        app: Flask, clock: FakeClock) -> None:
    store = app.extensions["store"]
    for body in conversations(4):
        post(app, body)
    first = store.claim("loop-a", 10, lease_seconds=60)
    assert len(first) == 4
    assert store.claim("loop-b", 10, lease_seconds=60) == []
    clock.advance(61)
    again = store.claim("loop-b", 10, lease_seconds=60)
    assert [stored.id for stored in again] == [stored.id for stored in first]
    assert all(stored.attempts == 2 for stored in again)
    assert store.mark_delivered("loop-a", [stored.id for stored in first]) == 0, \
        "a loop that lost its lease must not overwrite the new owner's work"


def test_release_hands_rows_back_at_once(app: Flask) -> None:
    store = app.extensions["store"]
    for body in conversations(2):
        post(app, body)
    store.claim("loop-a", 10, lease_seconds=600)
    assert store.release("loop-a") == 2
    assert len(store.claim("loop-b", 10, lease_seconds=60)) == 2


def test_on_sqlite_only_one_delivery_loop_runs(tmp_path: Any) -> None:
    # SQLite only: PostgreSQL runs any number of loops, sharing rows with SKIP LOCKED.
    from drift_segment_source.store.db import make_engine
    from drift_segment_source.store.store import Store

    store = Store(make_engine(f"sqlite:///{tmp_path / 'lease.sqlite3'}"))
    store.migrate()
    assert store.take_lease("delivery", "a", 30)
    assert not store.take_lease("delivery", "b", 30)
    assert store.take_lease("delivery", "a", 30), "the holder renews"
    store.drop_lease("delivery", "a")
    assert store.take_lease("delivery", "b", 30)
    store.close()


def test_delivered_rows_are_pruned_after_the_retention_period(app: Flask, clock: FakeClock) -> None:
    for body in conversations(3):
        post(app, body)
    make_delivery(app).run_round()
    store = app.extensions["store"]
    assert store.prune(clock.now - 1) == 0
    clock.advance(8 * 86400)
    seen_now(app)
    delivery: Delivery = make_delivery(app)
    delivery.housekeeping.prune()
    assert states(app) == {}


def test_network_errors_are_retried(make_app: AppFactory, segment: FakeSegment,
                                    clock: FakeClock) -> None:
    from ..support.loopback import free_port

    unreachable = make_app(SEGMENT_HOST=f"http://127.0.0.1:{free_port()}", CLOCK=clock)
    webhook_id = post(unreachable, conversations(1)[0])["id"]
    make_delivery(unreachable).run_round()
    assert row(unreachable, webhook_id)["state"] == "pending"
    assert "network error" in row(unreachable, webhook_id)["last_error"]
    reachable = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    clock.advance(60)
    make_delivery(reachable).run_round()
    assert row(reachable, webhook_id)["state"] == "delivered"


def test_failing_transport_is_chosen_by_configuration(make_app: AppFactory,
                                                      segment: FakeSegment,
                                                      clock: FakeClock) -> None:
    # Fault injection in the Antenna style: the same code, a failing backend.
    failing = make_app(SEGMENT_HOST=segment.url, CLOCK=clock, SEGMENT_TRANSPORT="failing:503")
    ids = [post(failing, body)["id"] for body in conversations(3)]
    delivery = make_delivery(failing)
    for _ in range(2):
        delivery.run_round()
        clock.advance(60)
    assert segment.requests == 0
    assert {row(failing, webhook_id)["state"] for webhook_id in ids} == {"pending"}
    assert "injected failure" in row(failing, ids[0])["last_error"]
    healthy = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    make_delivery(healthy).run_round()
    assert states(healthy) == {"delivered": 3}


