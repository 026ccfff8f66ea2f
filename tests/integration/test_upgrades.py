"""Upgrades keep every guarantee: a store left at any earlier schema revision, with rows in
every state, is migrated, then delivers what waited exactly once, re-sends nothing it had
delivered, and still answers every stored event `duplicate` (live or by backfill)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from flask import Flask
from sqlalchemy import text

from drift_segment_source.app import make_delivery
from drift_segment_source.sources.drift.backfill import store_webhooks
from drift_segment_source.sources.drift.translators import TRANSLATORS, dedupe_key, message_id

from ..support.fake_segment import FakeSegment
from .conftest import FIXTURES, AppFactory, webhook

DAY = 86_400
# The fixtures' events happened on 2024-04-29; the clock starts a day later.
START = 1714420800.0 + DAY
MIGRATIONS = (Path(__file__).resolve().parents[2] / "drift_segment_source" / "store"
              / "migrations" / "versions")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: Any, seconds: float) -> bool:
        return bool(event.wait(0))

    def advance(self, seconds: float) -> None:
        self.now += seconds


def conversation(number: int, created_ms: int = 1714419312425) -> dict[str, Any]:
    return webhook("new_conversation", {"id": number, "contactId": 9000 + number,
                                        "createdAt": created_ms + number})


# The state each stored webhook is left in before the downgrade, by conversation id.
STATES = {1: "pending", 2: "backoff", 3: "parked", 4: "held", 5: "delivered", 6: "dead",
          7: "dry_run"}
WAITING = {1, 2, 3, 4}  # delivered once after the upgrade; the others never again


def set_state(app: Flask, webhook_id: int, state: str, now: float) -> None:
    """Leave a stored row as an older version would have left it in ``state``."""
    values: dict[str, Any] = {
        "pending": "state = 'pending'",
        "backoff": "state = 'pending', attempts = 2, last_error = 'Segment 503: down'",
        "parked": "state = 'pending', last_error = 'waiting for Segment: "
                  "https://x is not answering (circuit open)'",
        "held": "state = 'held', hold_reason = 'no_drift_token', "
                "last_error = 'needs GET /conversations/1'",
        "delivered": f"state = 'delivered', finished_at = {now}",
        "dead": f"state = 'dead', finished_at = {now}, last_error = 'Segment 400: bad'",
        "dry_run": f"state = 'dry_run', finished_at = {now}",
    }
    with app.extensions["store"].engine.begin() as connection:
        connection.execute(text(f"UPDATE webhooks SET {values[state]}, "
                                f"next_attempt_at = {now} WHERE id = {int(webhook_id)}"))


def downgrade(app: Flask, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", "drift_segment_source.store:migrations")
    with app.extensions["store"].engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


@pytest.mark.parametrize("revision", ["0001", "0002", "0003", "0004"])
def test_an_upgrade_from_every_earlier_schema_delivers_what_waited_exactly_once(
        make_app: AppFactory, segment: FakeSegment, revision: str) -> None:
    clock = Clock()
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    bodies = {number: conversation(number) for number in STATES}
    ids = {number: app.test_client().post("/webhooks/drift", json=body).get_json()["id"]
           for number, body in bodies.items()}
    for number, state in STATES.items():
        set_state(app, ids[number], state, clock.now)
    downgrade(app, revision)
    clock.advance(DAY)
    app.extensions["store"].migrate()
    for _ in range(3):
        make_delivery(app).run_round()
        clock.advance(60)
    sent = [message["properties"]["id"] for message in segment.messages]
    assert sorted(sent) == sorted(WAITING), "each waiting event once, nothing delivered again"
    assert len({message["messageId"] for message in segment.messages}) == len(WAITING)
    for number, body in bodies.items():
        answer = app.test_client().post("/webhooks/drift", json=body).get_json()
        assert answer == {"status": "duplicate"}, (number, STATES[number], answer)
    store, routing = app.extensions["store"], app.extensions["routing"]
    assert store_webhooks(store, routing, bodies.values()) == {"duplicate": len(bodies)}
    make_delivery(app).run_round()
    assert len(segment.messages) == len(WAITING)


def test_an_upgrade_from_before_dedupe_keys_refuses_what_may_have_been_pruned(
        make_app: AppFactory, segment: FakeSegment) -> None:
    """The version before dedupe keys pruned delivered rows (and so their keys): an event
    older than the oldest delivered row kept may have been delivered and pruned."""
    clock = Clock()
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    pruned = app.test_client().post("/webhooks/drift", json=conversation(9)).get_json()["id"]
    kept = app.test_client().post("/webhooks/drift", json=conversation(1)).get_json()["id"]
    set_state(app, kept, "delivered", clock.now)
    downgrade(app, "0001")
    with app.extensions["store"].engine.begin() as connection:  # as the old version pruned
        connection.execute(text(f"DELETE FROM webhooks WHERE id = {int(pruned)}"))
    clock.advance(20 * DAY)
    app.extensions["store"].migrate()
    # An event of the same day as the one kept, which the old version may have pruned.
    pruned_maybe = conversation(2)
    answer = app.test_client().post("/webhooks/drift", json=pruned_maybe).get_json()
    assert answer["error"] == "beyond_dedupe_horizon"
    store, routing = app.extensions["store"], app.extensions["routing"]
    assert store_webhooks(store, routing, [pruned_maybe]) == {"beyond_dedupe_horizon": 1}
    assert app.test_client().post("/webhooks/drift", json=conversation(1)).get_json() == {
        "status": "duplicate"}
    fresh = conversation(3, created_ms=int(clock.now * 1000))
    assert app.test_client().post("/webhooks/drift", json=fresh).get_json()["status"] == \
        "accepted"
    make_delivery(app).run_round()
    assert [message["properties"]["id"] for message in segment.messages] == [3]


def test_an_upgrade_of_a_store_that_pruned_nothing_records_no_horizon(
        make_app: AppFactory, segment: FakeSegment) -> None:
    """Every row the old version stored is still there: backfill may reach as far back as it
    likes, and finds what it stored a duplicate."""
    clock = Clock()
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    kept = app.test_client().post("/webhooks/drift", json=conversation(1)).get_json()["id"]
    set_state(app, kept, "delivered", clock.now)
    downgrade(app, "0001")
    app.extensions["store"].migrate()
    assert app.extensions["store"].dedupe_horizon() == 0.0


def test_a_new_store_records_no_horizon(make_app: AppFactory) -> None:
    app = make_app()
    assert app.extensions["store"].dedupe_horizon() == 0.0




def test_a_row_stored_under_an_earlier_identity_keeps_its_message_ids(
        make_app: AppFactory, segment: FakeSegment) -> None:
    """A version that read numeric-string ids as they were sent stored (and may have sent)
    the event under that identity: after the upgrade its messages keep their messageIds, so
    Segment drops a copy it already has instead of counting the event twice."""
    clock = Clock()
    app = make_app(SEGMENT_HOST=segment.url, CLOCK=clock)
    body = json.loads((FIXTURES / "playbook_goal_met" / "numeric_string_ids.json").read_text())
    translator = TRANSLATORS["playbook_goal_met"]
    data = translator.validate(body["data"])
    as_sent = list(translator.identity_as_sent(data, 0))
    assert as_sent != list(translator.identity(data, 0)), "the identities differ"
    store = app.extensions["store"]
    store.accept(body["orgId"], "playbook_goal_met",
                 dedupe_key(body["orgId"], "playbook_goal_met", as_sent),
                 json.dumps({key: value for key, value in body.items() if key != "token"}),
                 received_at=clock.now)
    make_delivery(app).run_round()
    [message] = segment.messages
    assert message["messageId"] == message_id(body["orgId"], "playbook_goal_met", as_sent, 0)
