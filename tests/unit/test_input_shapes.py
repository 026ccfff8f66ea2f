"""Input shapes integration vendors publish for Drift webhooks, read by the translators: ids and
epoch-millisecond times as numeric strings, times as ISO-8601 strings with an offset are read
as what they spell; what is ambiguous is refused (docs/event-mapping.md, "Input shapes
accepted"). The door's answers to them are in tests/integration/test_input_shapes.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from marshmallow import ValidationError

from drift_segment_source.destinations.segment import MessageBuilder
from drift_segment_source.sources.drift.translators import TRANSLATORS, dedupe_key, translate
from drift_segment_source.sources.drift.translators.fields import epoch_ms_of_text

from ..support.paths import FIXTURES

RECEIVED = datetime(2024, 4, 29, 20, 0, tzinfo=UTC)


ORG = 5000883


def seed(event_type: str) -> dict[str, Any]:
    """The data of the event's seed example (contact_identified: its endUserId form)."""
    case = "end_user_id_form" if event_type == "contact_identified" else "seed_example"
    document: dict[str, Any] = json.loads((FIXTURES / event_type / f"{case}.json").read_text())
    return document["data"]


def messages(event_type: str, data: dict[str, Any], conversation: Any = None
             ) -> list[dict[str, Any]]:
    """The Segment messages ``data`` becomes, validated at the door."""
    translator = TRANSLATORS[event_type]
    builder = MessageBuilder()
    return [without_sent_at(builder.build(call)) for call in translate(
        translator, ORG, translator.validate(data), RECEIVED, conversation)]


def redelivered(event_type: str, data: dict[str, Any], conversation: Any = None
                ) -> list[dict[str, Any]]:
    """The same, the way delivery translates a stored webhook (no re-validation)."""
    translator = TRANSLATORS[event_type]
    builder = MessageBuilder()
    return [without_sent_at(builder.build(call)) for call in translate(
        translator, ORG, translator.reshape(data), RECEIVED, conversation)]


def without_sent_at(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "sentAt"}


def key_of(event_type: str, data: dict[str, Any]) -> str:
    translator = TRANSLATORS[event_type]
    return dedupe_key(ORG, event_type, translator.identity(translator.validate(data), 0))


def refusal(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as refused:
        TRANSLATORS[event_type].validate(data)
    found: dict[str, Any] = refused.value.messages  # type: ignore[assignment]
    return found


@pytest.mark.parametrize("text, millis", [
    ("1714419312425", 1714419312425),
    ("2024-04-29T19:35:12.425Z", 1714419312425),
    ("2024-04-29T19:35:12.425z", 1714419312425),
    ("2024-04-29T19:35:12.425+00:00", 1714419312425),
    ("2024-04-29T19:35:12.425-00:00", 1714419312425),
    ("2024-04-29T21:35:12.425+02:00", 1714419312425),
    ("2024-04-29T12:35:12.425-07:00", 1714419312425),
    ("2024-04-30T01:05:12.425+0530", 1714419312425),
    ("2024-04-29 19:35:12.425Z", 1714419312425),
    ("2024-04-29T19:35:12Z", 1714419312000),
    ("2024-04-29T19:35:12.4Z", 1714419312400),
    ("2024-04-29T19:35:12.425999999Z", 1714419312425),  # below a millisecond: truncated
    ("2024-04-29T24:00:00Z", 1714435200000),  # the end of the day is the next midnight
    ("2024-04-29T24:00:00.000+02:00", 1714428000000),
])
def test_unambiguous_times_are_read_as_the_instant_they_spell(text: str, millis: int) -> None:
    assert epoch_ms_of_text(text) == millis


@pytest.mark.parametrize("text, problem", [
    ("2024-04-29T19:35:12.425", "offset"),
    ("2024-04-29T19:35:12", "offset"),
    ("2024-04-29", "offset"),
    ("2024-04-29T23:59:60Z", "leap second"),
    ("2024-04-29T24:00:01Z", "24:00"),
    ("2024-04-29T24:30:00Z", "24:00"),
    ("2024-02-30T10:00:00Z", "not a date"),
    ("2024-04-29T19:35:12.425+24:00", "offset"),
    ("2024-04-29T19:35:12.4251234567Z", "not a time"),
    ("1714419312425.0", "not a time"),
    ("-1714419312425", "not a time"),
    ("+1714419312425", "not a time"),
    (" 1714419312425", "not a time"),
    ("01714419312425", "not a time"),
    ("１７１４４１９３１２４２５", "not a time"),
    ("soon", "not a time"),
    ("", "not a time"),
])
def test_ambiguous_or_junk_times_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"(?i){problem}"):
        epoch_ms_of_text(text)


def test_numeric_string_times_give_the_bytes_numbers_give() -> None:
    data = seed("new_conversation")
    as_strings = {**data, "createdAt": str(data["createdAt"]),
                  "updatedAt": str(data["updatedAt"])}
    assert messages("new_conversation", as_strings) == messages("new_conversation", data)


def test_iso_times_give_the_bytes_numbers_give() -> None:
    data = seed("new_meeting")
    iso = {**data, "scheduledAt": "2024-04-29T22:21:16+02:00",
           "slotStart": "2024-04-30T13:00:00Z", "slotEnd": "2024-04-30T06:30:00-07:00"}
    assert messages("new_meeting", iso) == messages("new_meeting", data)


def test_numeric_string_ids_stay_strings_and_name_the_same_event() -> None:
    data = seed("new_conversation")
    as_strings = {**data, **{name: str(data[name]) for name in
                             ("id", "contactId", "inboxId", "relatedPlaybookId")}}
    [sent] = messages("new_conversation", as_strings)
    [numeric] = messages("new_conversation", data)
    assert sent["properties"]["contactId"] == "21760538950"
    assert sent["properties"]["id"] == "3969707702"
    assert sent["anonymousId"] == numeric["anonymousId"] == "21760538950"
    assert sent["messageId"] == numeric["messageId"]
    assert key_of("new_conversation", as_strings) == key_of("new_conversation", data)


@pytest.mark.parametrize("event_type", sorted(TRANSLATORS))
def test_every_event_is_the_same_event_with_ids_and_times_as_strings(event_type: str) -> None:
    data = seed(event_type)
    assert key_of(event_type, stringified(data)) == key_of(event_type, data)


def stringified(value: Any) -> Any:
    """Every integer of ``value`` (ids, times) spelled as a numeric string."""
    if isinstance(value, dict):
        return {key: stringified(item) for key, item in value.items()}
    if isinstance(value, list):
        return [stringified(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@pytest.mark.parametrize("event_type", sorted(TRANSLATORS))
def test_delivery_translates_the_new_shapes_exactly_as_the_door(event_type: str) -> None:
    data = {**stringified(seed(event_type)), **iso_times(seed(event_type))}
    conversation = {"contactId": 21760538950} if event_type.startswith("conversation_") else None
    assert redelivered(event_type, data, conversation) == messages(event_type, data,
                                                                   conversation)


def iso_times(data: dict[str, Any]) -> dict[str, Any]:
    """The event-time fields of ``data`` as ISO-8601 with an offset."""
    found = {}
    for name in ("createdAt", "scheduledAt", "changedAt", "timestamp"):
        if isinstance(data.get(name), int):
            seconds, millis = divmod(data[name], 1000)
            moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
            found[name] = moment.isoformat(timespec="milliseconds")
    return found


@pytest.mark.parametrize("value, problem", [
    ("1714419312", "seconds"),
    ("2024-04-29T19:35:12.425", "offset"),
    ("2024-04-29T23:59:60Z", "leap second"),
    ("1714419312425.0", "Not a time"),
    ("yesterday", "Not a time"),
    ("100", "1973"),
])
def test_ambiguous_times_are_refused_by_the_schema(value: str, problem: str) -> None:
    errors = refusal("new_conversation", {**seed("new_conversation"), "createdAt": value})
    assert problem in str(errors["createdAt"])


@pytest.mark.parametrize("field", ["updatedAt", "slotStart"])
def test_time_properties_follow_the_same_rule(field: str) -> None:
    # A time property's number is passed on as Drift sent it; its digits are that number.
    data = seed("new_meeting")
    for number in (0, 1714482000, 1714482000000):
        assert (messages("new_meeting", {**data, field: str(number)})
                == messages("new_meeting", {**data, field: number}))
    assert field in refusal("new_meeting", {**data, field: "2024-04-30T13:00:00"})
    assert field in refusal("new_meeting", {**data, field: "013"})


@pytest.mark.parametrize("value", [1.0, "1.0", 3969707702.0, "0123", "00000000000000000001",
                                   "99999999999999999999", "9223372036854775808", "-5", "",
                                   " 12", "１２"])
def test_ids_that_are_not_ids_are_refused(value: Any) -> None:
    errors = refusal("new_conversation", {**seed("new_conversation"), "id": value})
    assert "id" in errors


def test_an_id_as_large_as_drift_ids_go_is_kept_exactly() -> None:
    data = {**seed("new_conversation"), "contactId": "9223372036854775807"}
    [sent] = messages("new_conversation", data)
    assert sent["anonymousId"] == sent["properties"]["contactId"] == "9223372036854775807"


def test_an_org_id_in_data_sent_as_a_string_stays_a_string() -> None:
    data = {**seed("new_meeting"), "orgId": "5000883"}
    [sent] = messages("new_meeting", data)
    assert sent["properties"]["orgId"] == "5000883"

