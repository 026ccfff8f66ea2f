"""Dedupe has a horizon that covers every re-send (docs/reliability.md#dedupe-horizon): keys
outlive webhook rows, requests beyond the keys kept are refused with the reason, and
identities are stable facts of the event (a meeting's eventId, never its slot times)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from flask import Flask
from sqlalchemy import text

from drift_segment_source.app import make_delivery
from drift_segment_source.sources.drift.backfill import BeyondHorizon, check_window, store_webhooks
from drift_segment_source.store.retention import HORIZON_CACHE_SECONDS

from ..support.clock import FakeClock
from ..support.fake_segment import FakeSegment
from .conftest import FIXTURES, AppFactory, seen_now, webhook

DAY = 86_400
PRUNE_EVERY_SECONDS = 600  # the default RETENTION_INTERVAL_SECONDS
# The fixtures' events happened on 2024-04-29; the clock starts an hour later.
START = 1714420800.0 + 3600



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, clock: FakeClock) -> Flask:
    return make_app(SEGMENT_HOST=segment.url, CLOCK=clock)


def fixture(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (FIXTURES / event_type / "seed_example.json").read_text())
    return document


def answer(app: Flask, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = app.test_client().post("/webhooks/drift", json=body).get_json()
    return result


def webhook_rows(app: Flask) -> int:
    with app.extensions["store"].engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM webhooks").scalar_one())


def prune(app: Flask) -> None:
    """Run retention now. Retention counts from the newest event the store has seen, so
    another event is seen first, at the test clock's present."""
    seen_now(app)
    make_delivery(app).housekeeping.prune()



def test_a_redelivery_after_the_webhook_row_is_pruned_is_still_a_duplicate(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    body = fixture("new_conversation")
    assert answer(app, body)["status"] == "accepted"
    make_delivery(app).run_round()
    clock.advance(8 * DAY)  # past RETENTION_DAYS (7): the delivered row goes
    prune(app)
    assert webhook_rows(app) == 0
    assert answer(app, body) == {"status": "duplicate"}
    store, routing = app.extensions["store"], app.extensions["routing"]
    assert store_webhooks(store, routing, [body]) == {"duplicate": 1}
    make_delivery(app).run_round()
    assert len(segment.messages) == 1


def test_events_older_than_the_keys_kept_are_refused_not_sent_twice(
        app: Flask, segment: FakeSegment, clock: FakeClock) -> None:
    body = fixture("new_conversation")
    assert answer(app, body)["status"] == "accepted"
    make_delivery(app).run_round()
    clock.advance(91 * DAY)  # past DEDUPE_RETENTION_DAYS (90)
    prune(app)  # announces the horizon; the key is kept until the next prune
    clock.advance(HORIZON_CACHE_SECONDS + 1)
    assert answer(app, body) == {"status": "duplicate"}, "its key is still kept"
    clock.advance(PRUNE_EVERY_SECONDS)
    prune(app)
    with app.extensions["store"].engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM dedupe_keys").scalar_one() == 2,\
            "only the keys seen at the two prunes' present are left"
    refused = answer(app, body)
    assert refused["error"] == "beyond_dedupe_horizon"
    assert "DEDUPE_RETENTION_DAYS" in refused["message"]
    # An event that happened now is accepted as ever.
    fresh = webhook("new_conversation", {"id": 1, "contactId": 2,
                                         "createdAt": int(clock.now * 1000)})
    assert answer(app, fresh)["status"] == "accepted"
    make_delivery(app).run_round()
    assert len(segment.messages) == 2


def test_a_backfill_window_reaching_past_the_keys_kept_is_refused(
        app: Flask, clock: FakeClock) -> None:
    store = app.extensions["store"]
    check_window(store, int(START * 1000) - 365 * DAY * 1000)  # nothing pruned yet: fine
    assert answer(app, fixture("new_conversation"))["status"] == "accepted"
    make_delivery(app).run_round()
    clock.advance(91 * DAY)
    prune(app)
    clock.advance(HORIZON_CACHE_SECONDS + 1)
    with pytest.raises(BeyondHorizon, match="--since"):
        check_window(store, int(START * 1000))
    check_window(store, int((clock.now - 80 * DAY) * 1000))


def test_a_rescheduled_meeting_backfilled_later_is_the_same_booking(app: Flask) -> None:
    live = fixture("new_meeting")
    assert answer(app, live)["status"] == "accepted"
    rescheduled = json.loads(json.dumps(live))
    for name in ("slotStart", "slotEnd"):
        rescheduled["data"][name] += 2 * DAY * 1000
    store, routing = app.extensions["store"], app.extensions["routing"]
    assert store_webhooks(store, routing, [rescheduled]) == {"duplicate": 1}


def test_each_change_of_a_meeting_is_its_own_event(app: Flask) -> None:
    update = fixture("meeting_updated")
    update["data"].update(eventType="rescheduled", updatedAt=1714425000000)
    assert answer(app, update)["status"] == "accepted"
    assert answer(app, update) == {"status": "duplicate"}
    update["data"]["updatedAt"] = 1714426000000  # rescheduled again
    assert answer(app, update)["status"] == "accepted"


@pytest.mark.parametrize("event_type, data", [
    ("conversation_participant_added", {"conversationId": 5, "addedParticipants": [7]}),
    ("conversation_push", {"conversationId": 5, "source": "conversation_manual_push",
                           "contactId": 9, "createdAt": 1714419312425, "inboxId": 1,
                           "status": "closed", "updatedAt": 1714419312425}),
])
def test_events_without_their_own_time_are_told_apart_by_receipt_time(
        app: Flask, clock: FakeClock, event_type: str, data: dict[str, Any]) -> None:
    body = webhook(event_type, data)
    assert answer(app, body)["status"] == "accepted"
    assert answer(app, body) == {"status": "duplicate"}, "the same delivery, same moment"
    clock.advance(60)  # the same agent added again a minute later: a second event
    assert answer(app, body)["status"] == "accepted"


def test_upgrading_keeps_the_dedupe_keys_of_webhooks_already_stored(
        make_app: AppFactory, database_url: str, clock: FakeClock,
        segment: FakeSegment) -> None:
    app = make_app(CLOCK=clock, SEGMENT_HOST=segment.url)
    store = app.extensions["store"]
    body = fixture("new_conversation")
    assert answer(app, body)["status"] == "accepted"
    # Back to the schema before dedupe keys were kept apart, with the row still there.
    config = Config()
    config.set_main_option("script_location", "drift_segment_source.store:migrations")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM webhooks")).scalar_one() == 1
    store.migrate()
    make_delivery(app).run_round()
    clock.advance(8 * DAY)
    prune(app)
    assert webhook_rows(app) == 0
    assert answer(app, body) == {"status": "duplicate"}


def test_a_change_back_and_forth_without_timestamps_is_three_events(
        app: Flask, clock: FakeClock) -> None:
    answers = []
    for previous, updated in (("a@x.io", "b@x.io"), ("b@x.io", "a@x.io"), ("a@x.io", "b@x.io")):
        answers.append(answer(app, webhook("contact_updated", {
            "endUserId": 42, "diff": [{"name": "attributes.email", "previous": previous,
                                       "updated": updated}]}))["status"])
        clock.advance(60)
    assert answers == ["accepted"] * 3


def test_a_slot_that_comes_back_is_a_third_meeting_change(app: Flask, clock: FakeClock) -> None:
    update = fixture("meeting_updated")
    update["data"].pop("updatedAt", None)
    answers = []
    for slot in (1714482000000, 1714485600000, 1714482000000):
        update["data"]["slotStart"] = slot
        answers.append(answer(app, update)["status"])
        clock.advance(60)
    assert answers == ["accepted"] * 3


def test_a_meeting_booked_before_the_horizon_and_rescheduled_since_is_refused(
        app: Flask, clock: FakeClock) -> None:
    booked = fixture("new_meeting")
    assert answer(app, booked)["status"] == "accepted"
    make_delivery(app).run_round()
    clock.advance(91 * DAY)
    prune(app)
    clock.advance(PRUNE_EVERY_SECONDS)
    prune(app)  # the key is gone now
    clock.advance(HORIZON_CACHE_SECONDS + 1)
    # Backfill reads the meeting as it is now: moved, with a fresh updatedAt.
    now_ms = int(clock.now * 1000)
    moved = json.loads(json.dumps(booked))
    moved["data"].update(slotStart=now_ms + DAY * 1000, updatedAt=now_ms)
    store, routing = app.extensions["store"], app.extensions["routing"]
    assert store_webhooks(store, routing, [moved]) == {"beyond_dedupe_horizon": 1}


def test_upgrading_keeps_events_stored_under_the_old_identities_duplicates(
        make_app: AppFactory, clock: FakeClock) -> None:
    import hashlib

    app = make_app(CLOCK=clock, SEGMENT_WRITE_KEY="")
    store = app.extensions["store"]
    config = Config()
    config.set_main_option("script_location", "drift_segment_source.store:migrations")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    # A meeting stored by the version before: its key hashed the slot times too.
    meeting = fixture("new_meeting")
    data = meeting["data"]
    old_identity = [data["eventId"], data["schedulerId"], None, data["slotStart"],
                    data["scheduledAt"]]
    old_key = "drift-new_meeting-" + hashlib.sha256(json.dumps(
        [5000883, "new_meeting", *old_identity, -1], separators=(",", ":"), sort_keys=True,
        ensure_ascii=False).encode()).hexdigest()[:32]
    with store.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO webhooks (org_id, event_type, dedupe_key, payload, received_at, "
            "queued_at, state, attempts, next_attempt_at, finished_at) VALUES (5000883, "
            "'new_meeting', :key, :payload, :now, :now, 'delivered', 1, :now, :now)"),
            {"key": old_key, "payload": json.dumps(meeting), "now": clock.now})
    store.migrate()
    clock.advance(8 * DAY)
    prune(app)
    assert webhook_rows(app) == 0
    assert answer(app, meeting) == {"status": "duplicate"}
