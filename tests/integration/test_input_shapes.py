"""Input shapes integration vendors publish for Drift webhooks (docs/event-mapping.md, "Input
shapes accepted"): ids and epoch-millisecond times as numeric strings, times as ISO-8601
strings with an offset. What is unambiguous is read as the id or instant it spells; what is
not (an ISO time without offset, seconds that could be milliseconds, junk) is refused with
the same field errors as before.

- ids are kept exactly as sent (``"1234"`` stays a string in the Segment output);
- times become the epoch milliseconds a number would have been: numeric input gives the same
  bytes as before, and every spelling of one instant gives the same output;
- ``"123"`` and ``123`` are the same Drift event: the same messageId and dedupe key.

The translator tests need no database or socket; the last tests post to the endpoint.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from marshmallow import ValidationError

from drift_segment_source.destinations.segment import MessageBuilder
from drift_segment_source.sources.drift.translators import TRANSLATORS, dedupe_key, translate

from .conftest import FIXTURES, AppFactory, webhook

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


# -- reading a time ---------------------------------------------------------------------------






# -- through the translators ------------------------------------------------------------------










def stringified(value: Any) -> Any:
    """Every integer of ``value`` (ids, times) spelled as a numeric string."""
    if isinstance(value, dict):
        return {key: stringified(item) for key, item in value.items()}
    if isinstance(value, list):
        return [stringified(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value




def iso_times(data: dict[str, Any]) -> dict[str, Any]:
    """The event-time fields of ``data`` as ISO-8601 with an offset."""
    found = {}
    for name in ("createdAt", "scheduledAt", "changedAt", "timestamp"):
        if isinstance(data.get(name), int):
            seconds, millis = divmod(data[name], 1000)
            moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
            found[name] = moment.isoformat(timespec="milliseconds")
    return found












# -- through the endpoint ---------------------------------------------------------------------


def test_the_same_event_sent_again_with_string_ids_is_a_duplicate(make_app: AppFactory) -> None:
    client = make_app().test_client()
    data = seed("new_conversation")
    first = client.post("/webhooks/drift", json=webhook("new_conversation", data))
    again = client.post("/webhooks/drift", json=webhook("new_conversation", {
        **stringified(data), "createdAt": "2024-04-29T21:35:12.425+02:00"}))
    assert first.get_json()["status"] == "accepted"
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})


def test_an_ambiguous_time_is_a_422_naming_the_field(make_app: AppFactory) -> None:
    client = make_app().test_client()
    answer = client.post("/webhooks/drift", json=webhook("new_conversation", {
        **seed("new_conversation"), "createdAt": "2024-04-29T19:35:12.425"}))
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["error"] == "invalid_data"
    assert "offset" in body["fields"]["createdAt"][0]


def test_an_event_stored_with_a_string_id_by_an_earlier_version_stays_a_duplicate(
        make_app: AppFactory) -> None:
    # Earlier versions made the dedupe key of ids as sent ("123" and 123 apart); a Drift
    # retry of such an event after the upgrade must not be delivered a second time.
    app = make_app()
    data = {**seed("new_conversation"), "id": "3969707702", "contactId": "21760538950"}
    translator = TRANSLATORS["new_conversation"]
    earlier_key = dedupe_key(ORG, "new_conversation",
                             translator.identity_as_sent(translator.validate(data), 0))
    assert earlier_key != key_of("new_conversation", data)
    store = app.extensions["store"]
    store.accept(ORG, "new_conversation", earlier_key, json.dumps(webhook(
        "new_conversation", data, token=None)), received_at=1714420000.0)
    again = app.test_client().post("/webhooks/drift", json=webhook("new_conversation", data))
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})
    assert store.counts() == {("new_conversation", "pending"): 1}
