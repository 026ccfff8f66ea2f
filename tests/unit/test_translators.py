"""Translators are pure: the same Drift event always gives the same calls and messageIds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from drift_segment_source.destinations.segment import MessageBuilder, MessageTooLarge
from drift_segment_source.sources.drift.translators import (
    TRANSLATORS,
    NeedsConversation,
    dedupe_key,
    message_id,
    translate,
)
from drift_segment_source.sources.drift.translators.base import receipt_ms

from ..support.paths import FIXTURES

RECEIVED = datetime(2024, 4, 29, 20, 0, tzinfo=UTC)
ORG = 5000883


def seed(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (FIXTURES / event_type / "seed_example.json").read_text())
    return document["data"]


def calls_for(event_type: str, data: dict[str, Any], org: int = ORG,
              conversation: dict[str, Any] | None = None, received: datetime = RECEIVED) -> Any:
    translator = TRANSLATORS[event_type]
    return translate(translator, org, translator.validate(data), received, conversation)


def test_message_id_is_the_same_for_the_same_event() -> None:
    first = calls_for("new_conversation", seed("new_conversation"))
    later = calls_for("new_conversation", seed("new_conversation"),
                      received=datetime(2030, 1, 1, tzinfo=UTC))
    assert [call.message_id for call in first] == [call.message_id for call in later]


def test_message_id_differs_between_orgs_types_and_events() -> None:
    data = seed("new_conversation")
    base = calls_for("new_conversation", data)[0].message_id
    assert calls_for("new_conversation", data, org=ORG + 1)[0].message_id != base
    assert calls_for("new_conversation", {**data, "id": data["id"] + 1})[0].message_id != base


def test_two_calls_from_one_webhook_get_two_ids() -> None:
    assert message_id(1, "x", [1], 0) != message_id(1, "x", [1], 1)
    assert dedupe_key(1, "x", [1]) not in {message_id(1, "x", [1], 0),
                                           message_id(1, "x", [1], 1)}


def test_message_ids_fit_segment_limit_for_every_type_and_huge_ids() -> None:
    for event_type in TRANSLATORS:
        long_id = message_id(2**63 - 1, event_type, ["x" * 500, 2**64], 99)
        assert len(long_id) <= 100


def test_received_time_matters_only_for_events_without_their_own_time() -> None:
    later = datetime(2030, 1, 1, tzinfo=UTC)
    goal = calls_for("playbook_goal_met", seed("playbook_goal_met"), received=later)[0]
    assert goal.timestamp == later
    conversation = calls_for("new_conversation", seed("new_conversation"), received=later)[0]
    assert conversation.timestamp == datetime(2024, 4, 29, 19, 35, 12, 425000, tzinfo=UTC)


@pytest.mark.parametrize("millis", [1714419312425, 1714419312001, 1714419312999, 1714419312000])
def test_epoch_milliseconds_become_exact_aware_utc(millis: int) -> None:
    data = {**seed("new_conversation"), "createdAt": millis}
    call = calls_for("new_conversation", data)[0]
    assert call.timestamp.tzinfo is not None
    assert round(call.timestamp.timestamp() * 1000) == millis
    message = MessageBuilder().build(call)
    assert message["timestamp"].endswith(f".{millis % 1000:03d}+00:00")


# The digits of epoch ms as a string are that time (test_input_shapes.py); their seconds are not.
@pytest.mark.parametrize("value", [1714419312, 1714419312.5, -5, 10**15, True, "1714419312",
                                   "2024-04-29T19:35:12.425"])
def test_event_times_that_are_not_epoch_milliseconds_are_refused(value: Any) -> None:
    with pytest.raises(ValidationError) as error:
        TRANSLATORS["new_conversation"].validate({**seed("new_conversation"), "createdAt": value})
    assert "createdAt" in error.value.messages


def test_seconds_are_named_as_seconds_in_the_error() -> None:
    with pytest.raises(ValidationError) as error:
        TRANSLATORS["new_meeting"].validate({**seed("new_meeting"), "scheduledAt": 1714422076})
    assert "seconds" in str(error.value.messages["scheduledAt"])


def test_unknown_fields_never_reach_the_output() -> None:
    data = {**seed("button_clicked"), "secretThing": 1,
            "context": {**seed("button_clicked")["context"], "userAgent": "x",
                        "location": {"city": "Paris", "planet": "Earth"}}}
    properties = calls_for("button_clicked", data)[0].fields
    assert "secretThing" not in properties
    assert properties["location"] == {"city": "Paris"}


def test_absent_or_null_optional_fields_are_left_out_not_null() -> None:
    data = {"id": 1, "contactId": 2, "inboxId": None}
    assert calls_for("new_conversation", data)[0].fields == {"id": 1, "contactId": 2}


def test_anonymous_id_is_the_contact_id_as_a_string() -> None:
    for event_type in ("new_conversation", "button_clicked", "new_meeting", "playbook_goal_met",
                       "phone_captured", "contact_updated"):
        call = calls_for(event_type, seed(event_type))[0]
        contact = call.fields["contactId"]
        assert call.anonymous_id == str(contact)


def test_ids_above_2_53_stay_exact() -> None:
    big = 2**53 + 1
    call = calls_for("new_conversation", {"id": big, "contactId": big + 2})[0]
    assert call.fields == {"id": big, "contactId": big + 2}
    assert call.anonymous_id == "9007199254740995"


def test_contact_updated_nests_dotted_names_and_strips_the_attributes_prefix() -> None:
    data = {"endUserId": 7, "timestamp": 1714419312425, "diff": [
        {"name": "attributes.email", "previous": None, "updated": "a@b.c"},
        {"name": "socialProfiles.twitter", "previous": None, "updated": "@x"},
        {"name": "attributes.address.city", "previous": "A", "updated": "B"},
        {"name": "attributes.company", "previous": "Old"},
    ]}
    call = calls_for("contact_updated", data)[0]
    assert call.kind == "identify"
    assert call.fields == {"email": "a@b.c", "socialProfiles": {"twitter": "@x"},
                           "address": {"city": "B"}, "contactId": 7}


def test_conversation_push_without_conversation_fields_needs_the_api() -> None:
    data = {"data": {"conversationId": 3, "pushedAt": 1714421087350, "source": "x"}}
    with pytest.raises(NeedsConversation):
        calls_for("conversation_push", data)
    conversation = {"id": 3, "contactId": 9, "createdAt": 1, "inboxId": 2, "status": "closed",
                    "updatedAt": 4, "participants": [5], "unrelated": "no"}
    call = calls_for("conversation_push", data, conversation=conversation)[0]
    assert call.fields == {"conversationId": 3, "pushedAt": 1714421087350, "source": "x",
                           "id": 3, "contactId": 9, "createdAt": 1, "inboxId": 2,
                           "status": "closed", "updatedAt": 4, "participants": [5]}


def test_phone_captured_by_an_agent_needs_the_conversation() -> None:
    data = {"conversationId": 3, "authorId": 99, "authorType": "user", "phoneNumber": "555"}
    translator = TRANSLATORS["phone_captured"]
    assert translator.conversation_needed(translator.validate(data)) == 3
    call = calls_for("phone_captured", data, conversation={"contactId": 12})[0]
    assert call.fields == {"contactId": 12, "phone": "555"}
    assert call.anonymous_id == "12"


def test_button_click_by_an_agent_is_refused() -> None:
    data = {**seed("button_clicked"), "author": {"id": 1, "type": "user"}}
    with pytest.raises(ValidationError):
        TRANSLATORS["button_clicked"].validate(data)


def test_meeting_without_contact_or_scheduler_is_refused() -> None:
    data = {key: value for key, value in seed("new_meeting").items()
            if key not in ("contactId", "schedulerId")}
    with pytest.raises(ValidationError):
        TRANSLATORS["new_meeting"].validate(data)


def test_every_track_is_named_drift_source_event_type() -> None:
    for event_type in ("new_conversation", "button_clicked", "playbook_goal_met"):
        call = calls_for(event_type, seed(event_type))[0]
        assert call.event == f"Drift Source Event: {event_type}"


def test_built_messages_carry_integration_and_disable_the_drift_destination() -> None:
    message = MessageBuilder().build(calls_for("new_conversation", seed("new_conversation"))[0])
    assert message["context"]["integration"]["name"] == "drift-segment-source"
    assert message["integrations"] == {"Drift": False}


def test_a_message_over_32_kb_is_caught_before_sending() -> None:
    data = {**seed("button_clicked"), "body": "x" * 40_000}
    with pytest.raises(MessageTooLarge):
        MessageBuilder().build(calls_for("button_clicked", data)[0])


# -- delivery skips re-validation: reshape(raw) must translate exactly like validate(raw) --

CASES = sorted(path for path in FIXTURES.glob("*/*.json")
               if not path.name.endswith((".segment.json", ".drift-api.json")))


def both_ways(event_type: str, raw: dict[str, Any]) -> tuple[Any, Any]:
    translator = TRANSLATORS[event_type]
    validated = translator.validate(raw)
    reshaped = translator.reshape(raw)
    conversation = {"contactId": 42, "id": 1, "createdAt": 1, "inboxId": 2, "status": "open",
                    "updatedAt": 3}
    results = []
    for data in (validated, reshaped):
        needed = translator.conversation_needed(data)
        calls = translate(translator, ORG, data, RECEIVED,
                          conversation if needed is not None else None)
        results.append((list(translator.identity(data, receipt_ms(RECEIVED))), needed, calls))
    return results[0], results[1]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.stem}")
def test_reshaped_stored_data_translates_exactly_like_validated_data(case: Any) -> None:
    document = json.loads(case.read_text())
    validated, reshaped = both_ways(document["type"], document["data"])
    assert reshaped == validated


@settings(max_examples=300, deadline=None)
@given(event_type=st.sampled_from(sorted(TRANSLATORS)),
       data=st.dictionaries(
           st.sampled_from(["id", "contactId", "conversationId", "createdAt", "author",
                            "body", "context", "diff", "endUserId", "timestamp", "schedulerId",
                            "scheduledAt", "phoneNumber", "authorType", "authorId", "pushedAt",
                            "data", "changedAt", "addedParticipants", "removedParticipants",
                            "eventId", "extra", "status", "inboxId", "source", "userId"]),
           st.integers(0, 2**63) | st.integers(100_000_000_000, 9_000_000_000_000)
           | st.text(max_size=8) | st.none() | st.booleans()
           | st.lists(st.integers(0, 99), max_size=3)
           | st.fixed_dictionaries({"id": st.integers(0, 9)},
                                   optional={"type": st.just("contact"), "x": st.just(1)})
           | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["attributes.a", "b.c"])},
                                            optional={"updated": st.integers(),
                                                      "previous": st.none(),
                                                      "junk": st.text(max_size=3)}),
                      max_size=3)
           | st.fixed_dictionaries({"conversationId": st.integers(1, 9)},
                                   optional={"pushedAt": st.just(1714421087350),
                                             "contactId": st.integers(1, 9)}),
           max_size=12))
def test_any_valid_data_translates_the_same_reshaped_or_validated(
        event_type: str, data: dict[str, Any]) -> None:
    try:
        TRANSLATORS[event_type].validate(data)
    except ValidationError:
        return  # refused at the door (422): never stored, never delivered
    validated, reshaped = both_ways(event_type, data)
    assert reshaped == validated
