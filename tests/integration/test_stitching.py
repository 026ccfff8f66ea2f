"""Identity stitching (docs/event-mapping.md#identity-stitching): contacts the site identified
are joined to their userId, once per contact and externalId, without weakening anything else."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.cli import main

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .conftest import FIXTURES, AppFactory, webhook

DRIFT_AID = "189f059b-4b5e-4c28-988c-b1764ae86fc"  # Drift's own documented example


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift() as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> Flask:
    return make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                    IDENTITY_STITCHING="external_id")


def contact(drift: FakeDrift, contact_id: int, external_id: str | None,
            email: str | None = None) -> None:
    attributes = {key: value for key, value in {"externalId": external_id,
                                                "email": email}.items() if value}
    drift.add_contact({"id": contact_id, "attributes": attributes})


def conversation(number: int, contact_id: int) -> dict[str, Any]:
    return webhook("new_conversation", {"id": number, "contactId": contact_id,
                                        "createdAt": 1714419312425 + number})


def post(app: Flask, body: dict[str, Any]) -> None:
    answer = app.test_client().post("/webhooks/drift", json=body)
    assert answer.get_json()["status"] == "accepted", answer.get_json()


def drain(app: Flask, timeout: float = 30) -> None:
    """Deliver until nothing is pending (rows sent back to wait come due again soon)."""
    delivery = make_delivery(app)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if delivery.run_round() == 0:
            if app.extensions["store"].backlog()[0] == 0:
                return
            time.sleep(0.1)
    raise AssertionError("rows still pending")


def links(segment: FakeSegment) -> list[dict[str, Any]]:
    return [message for message in segment.messages
            if message["messageId"].startswith("drift-identity_link-")]






def test_the_link_is_sent_once_per_contact_even_across_restarts(
        app: Flask, make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    contact(drift, 7001, "user-7001", "ada@example.com")
    post(app, conversation(1, 7001))
    post(app, conversation(2, 7001))
    drain(app)
    [link] = links(segment)
    assert (link["anonymousId"], link["userId"]) == ("7001", "user-7001")
    assert link["traits"] == {"email": "ada@example.com"}
    tracks = [message for message in segment.messages if message["type"] == "track"]
    assert {message["userId"] for message in tracks} == {"user-7001"}
    # A new process (new app, new delivery loop, empty caches) on the same store.
    restarted = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                         IDENTITY_STITCHING="external_id")
    post(restarted, conversation(3, 7001))
    drain(restarted)
    assert len(links(segment)) == 1
    assert segment.messages[-1]["userId"] == "user-7001"


def test_a_changed_external_id_gets_a_new_link(app: Flask, segment: FakeSegment,
                                                drift: FakeDrift) -> None:
    post(app, webhook("contact_identified", {"endUserId": 7002, "email": "a@example.com",
                                             "attributes": {"externalId": "old-id"}}))
    drain(app)
    post(app, webhook("contact_updated", {"endUserId": 7002, "timestamp": 1714419380512,
                                          "diff": [{"name": "attributes.externalId",
                                                    "previous": "old-id",
                                                    "updated": "new-id"}]}))
    drain(app)
    assert [(link["userId"], link["anonymousId"]) for link in links(segment)] == [
        ("old-id", "7002"), ("new-id", "7002")]
    assert drift.calls == [], "the webhooks said who the contact is: no lookup"


def test_an_anonymous_or_unknown_contact_is_sent_without_user_id_never_lost(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    contact(drift, 7003, DRIFT_AID)
    post(app, conversation(1, 7003))
    post(app, conversation(2, 7004))  # Drift answers 404: it does not know the contact
    drain(app)
    assert [message["userId"] for message in segment.messages] == [None, None]
    assert links(segment) == []


def test_an_external_id_too_long_for_segment_never_loses_the_event(
        app: Flask, segment: FakeSegment, drift: FakeDrift) -> None:
    """The door measures messages without userId; stitching must not make an accepted
    webhook undeliverable. A 33 KB externalId from the Drift API, or a 1.5 KB one
    on a message that was already near the 32 KB limit, goes out without userId."""
    contact(drift, 7010, "u" * 33_000)
    post(app, conversation(1, 7010))
    post(app, webhook("contact_identified", {"endUserId": 7011, "email": "b@example.com",
                                             "attributes": {"externalId": "x" * 17_000}}))
    # 31.9 KB as the Drift app sends it; the 1,000-character userId takes it past 32 KB.
    near_limit = {"endUserId": 7012, "attributes": {"externalId": "e" * 1_000,
                                                    "name": "n" * 30_500}}
    post(app, webhook("contact_identified", near_limit))
    drain(app)
    assert app.extensions["store"].counts() == {("new_conversation", "delivered"): 1,
                                                ("contact_identified", "delivered"): 2}
    assert sorted((m["anonymousId"], m.get("userId")) for m in segment.messages) == [
        ("7010", None), ("7011", None), ("7012", None)]
    assert links(segment) == []
    stitched = {"endUserId": 7013, "attributes": {"externalId": "s" * 1_024}}
    post(app, webhook("contact_identified", stitched))
    drain(app)
    assert segment.messages[-1]["userId"] == "s" * 1_024
    assert links(segment)[0]["userId"] == "s" * 1_024


def test_a_failing_contact_lookup_delays_only_its_rows(
        make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                   IDENTITY_STITCHING="external_id", DELIVERY_BACKOFF_SECONDS=60,
                   DELIVERY_BACKOFF_MAX_SECONDS=60)
    drift.status["7005"] = 503
    contact(drift, 7006, "user-7006")
    post(app, conversation(1, 7005))
    post(app, conversation(2, 7006))
    make_delivery(app).run_round()
    assert {message["anonymousId"] for message in segment.messages} == {"7006"}
    states = Counter(state for (_, state), count in app.extensions["store"].counts().items()
                     for _ in range(count))
    assert states == {"delivered": 1, "pending": 1}


def test_without_a_drift_token_only_what_webhooks_say_counts(
        make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url, DRIFT_ACCESS_TOKEN="",
                   IDENTITY_STITCHING="external_id")
    post(app, conversation(1, 7007))
    post(app, webhook("contact_identified", {"endUserId": 7007,
                                             "attributes": {"externalId": "user-7007"}}))
    drain(app)
    assert drift.calls == []
    by_type = {message["type"]: message for message in segment.messages
               if not message["messageId"].startswith("drift-identity_link-")}
    assert by_type["track"]["userId"] is None
    assert by_type["identify"]["userId"] == "user-7007"
    assert len(links(segment)) == 1


def test_a_burst_for_few_contacts_makes_one_lookup_per_contact(
        make_app: AppFactory, segment: FakeSegment, drift: FakeDrift) -> None:
    app = make_app(SEGMENT_HOST=segment.url, DRIFT_API_URL=drift.url,
                   IDENTITY_STITCHING="external_id", DELIVERY_BATCH_SIZE=500)
    for number in range(50):
        contact(drift, 8000 + number, f"user-{number}" if number % 2 else DRIFT_AID)
    for number in range(1000):
        post(app, conversation(number, 8000 + number % 50))
    drain(app)
    lookups = Counter(drift.paths("/contacts/"))
    print(f"\n1,000 webhooks for 50 contacts: {sum(lookups.values())} Drift contact lookups")
    assert len(segment.message_id_counts()) == 1000 + 25  # every event, 25 links
    assert sum(lookups.values()) == 50 and set(lookups.values()) == {1}


def test_translate_shows_stitched_output_when_the_setting_is_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    case = FIXTURES / "contact_identified" / "stitched_site_user.json"
    monkeypatch.setenv("IDENTITY_STITCHING", "external_id")
    result = CliRunner().invoke(main, ["translate", str(case), "--received-at",
                                       "2024-04-29 20:00:00"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)["batch"]
    expected = json.loads(case.with_name("stitched_site_user.segment.json").read_text())
    assert printed == expected
    monkeypatch.setenv("IDENTITY_STITCHING", "off")
    result = CliRunner().invoke(main, ["translate", str(case), "--received-at",
                                       "2024-04-29 20:00:00"])
    assert all(message["userId"] is None for message in json.loads(result.output)["batch"])
