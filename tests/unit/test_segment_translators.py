"""The Segment translators are pure: a Segment message in, Drift actions out (see
docs/segment-to-drift.md#what-each-call-does-in-drift)."""

from __future__ import annotations

from typing import Any

import pytest

from drift_segment_source.sources.segment.translators import (
    NotASegmentMessage,
    NotRelayed,
    Timeline,
    Upsert,
    translate,
)
from drift_segment_source.sources.segment.translators.base import epoch_ms, event_time_ms

RECEIVED_MS = 1714420800000


def actions(message: dict[str, Any]) -> list[Any]:
    return translate(message, RECEIVED_MS)


def upsert_of(traits: dict[str, Any], **extra: Any) -> Upsert:
    found = actions({"type": "identify", "userId": "u-1", "traits": traits, **extra})
    assert len(found) == 1 and isinstance(found[0], Upsert)
    return found[0]


def test_identify_sets_the_traits_on_the_contact_of_the_user_id() -> None:
    assert upsert_of({"email": "ada@example.com", "name": "Ada", "logins": 5}) == Upsert(
        {"email": "ada@example.com", "name": "Ada", "logins": 5}, external_id="u-1",
        email="ada@example.com")


@pytest.mark.parametrize("message, external_id", [
    ({"userId": "u-1", "traits": {"id": "t-1", "username": "ada", "name": "A"}}, "u-1"),
    ({"userId": None, "traits": {"id": "t-1", "username": "ada", "name": "A"}}, "t-1"),
    ({"userId": "", "traits": {"id": 77001, "name": "A"}}, "77001"),
    ({"anonymousId": "x", "traits": {"username": "ada", "name": "A"}}, "ada"),
    ({"userId": 42, "traits": {"name": "A"}}, "42"),
], ids=["userId", "id trait", "numeric id trait", "username trait", "numeric userId"])
def test_the_user_id_falls_back_to_the_id_then_the_username_trait(
        message: dict[str, Any], external_id: str) -> None:
    found = actions({"type": "identify", "anonymousId": "anon", **message})
    assert isinstance(found[0], Upsert) and found[0].external_id == external_id


def test_the_id_trait_is_never_an_attribute() -> None:
    assert "id" not in upsert_of({"id": "u-1", "name": "A"}).attributes


def test_the_seed_renames_created_at_title_and_description() -> None:
    attributes = upsert_of({"createdAt": "2015-02-23T22:28:55.111Z", "title": "CTO",
                            "description": "Likes compilers"}).attributes
    assert attributes == {"startDate": 1424730535111, "employmentTitle": "CTO",
                          "bio": "Likes compilers"}


def test_a_rename_never_overwrites_a_trait_of_the_new_name() -> None:
    attributes = upsert_of({"title": "CTO", "employmentTitle": "Chief Technology Officer"}
                           ).attributes
    assert attributes == {"title": "CTO", "employmentTitle": "Chief Technology Officer"}


@pytest.mark.parametrize("value, expected", [
    ("2015-02-23T22:28:55.111Z", 1424730535111),
    ("2015-02-23T22:28:55.111+01:00", 1424726935111),
    ("2015-02-23", 1424649600000),
    ("2015-02-23T22:28:55", 1424730535000),
    (1424730535, 1424730535000),
    (1424730535.111, 1424730535111),
    (1424730535111, 1424730535111),
    ("1424730535111", 1424730535111),
    ("1424730535", 1424730535000),
    ("last Tuesday", "last Tuesday"),
    (True, True),
], ids=repr)
def test_start_date_is_epoch_milliseconds(value: Any, expected: Any) -> None:
    assert epoch_ms(value) == expected
    assert upsert_of({"createdAt": value}).attributes == {"startDate": expected}


def test_the_address_is_flattened_unless_a_trait_has_the_name() -> None:
    attributes = upsert_of({"city": "Arlington", "address": {
        "street": "1 Navy Pier", "city": "New York", "postalCode": "10001"}}).attributes
    assert attributes == {"city": "Arlington", "street": "1 Navy Pier", "postalCode": "10001"}


def test_an_address_that_is_text_stays_one_attribute() -> None:
    assert upsert_of({"address": "1 Navy Pier, New York"}).attributes == {
        "address": "1 Navy Pier, New York"}


def test_other_nested_values_are_json_strings() -> None:
    attributes = upsert_of({"prefs": {"b": [1, "é"]}, "tags": ["vip"], "none": None}).attributes
    assert attributes == {"prefs": '{"b":[1,"é"]}', "tags": '["vip"]', "none": None}


def test_an_external_id_trait_cannot_re_key_the_contact() -> None:
    upsert = upsert_of({"externalId": "someone-else", "name": "A"})
    assert upsert.external_id == "u-1"
    assert upsert.attributes == {"name": "A"}


def test_the_email_is_what_a_missing_contact_is_created_with() -> None:
    assert upsert_of({"email": " ada@example.com "}).email == "ada@example.com"
    assert upsert_of({"name": "A"}).email is None
    assert upsert_of({"email": "", "name": "A"}).email is None


@pytest.mark.parametrize("message, expected", [
    ({"userId": "u-1"}, Timeline("Signed Up", 1714419600123, external_id="u-1")),
    ({"anonymousId": "21760538950"}, Timeline("Signed Up", 1714419600123,
                                             contact_id=21760538950)),
    ({"userId": "u-1", "anonymousId": "21760538950"}, Timeline("Signed Up", 1714419600123,
                                                              external_id="u-1")),
], ids=["userId", "contact id as anonymousId", "userId wins"])
def test_track_is_a_timeline_event_for_the_user(message: dict[str, Any],
                                                expected: Timeline) -> None:
    assert actions({"type": "track", "event": "Signed Up",
                    "timestamp": "2024-04-29T19:40:00.123Z", **message}) == [expected]


def test_the_event_time_falls_back_to_the_original_timestamp_then_the_receipt() -> None:
    assert event_time_ms({"timestamp": "2024-04-29T19:40:00.123Z",
                          "originalTimestamp": "2024-04-29T19:39:00Z"}, 0) == 1714419600123
    assert event_time_ms({"originalTimestamp": "2024-04-29T19:39:00Z"}, 0) == 1714419540000
    assert event_time_ms({}, RECEIVED_MS) == RECEIVED_MS


@pytest.mark.parametrize("anonymous_id", ["anon-1", "-5", "99999999999999999999", "１２３"],
                         ids=repr)
def test_an_anonymous_id_that_is_no_contact_id_is_not_relayed(anonymous_id: Any) -> None:
    with pytest.raises(NotRelayed, match="not a Drift contact id"):
        actions({"type": "track", "event": "x", "anonymousId": anonymous_id, "userId": None})


@pytest.mark.parametrize("message, name", [
    ({"type": "page", "name": "Pricing", "properties": {"title": "T"}}, "Page - Pricing"),
    ({"type": "page", "properties": {"name": "Docs", "title": "T"}}, "Page - Docs"),
    ({"type": "page", "properties": {"title": "Pricing · Example"}},
     "Page - Pricing · Example"),
    ({"type": "screen", "name": "Checkout"}, "Page - Checkout"),
], ids=["name", "properties.name", "properties.title", "screen"])
def test_page_and_screen_are_timeline_events_named_page_dash_name(
        message: dict[str, Any], name: str) -> None:
    found = actions({"userId": "u-1", "timestamp": "2024-04-29T19:40:00Z", **message})
    assert found == [Timeline(name, 1714419600000, external_id="u-1")]


def test_group_sets_the_company_on_the_users_contact() -> None:
    found = actions({"type": "group", "userId": "u-1", "groupId": "org-42", "traits": {
        "id": "org-42", "name": "Initech", "employees": 120, "address": {"city": "Austin"},
        "tags": ["b2b"]}})
    assert found == [Upsert({"companyId": "org-42", "companyName": "Initech",
                             "companyEmployees": 120, "companyTags": '["b2b"]',
                             "companyCity": "Austin"}, external_id="u-1")]


def test_group_by_contact_id_never_creates_a_contact() -> None:
    found = actions({"type": "group", "anonymousId": "21760538950", "groupId": 7})
    assert found == [Upsert({"companyId": 7}, contact_id=21760538950)]


@pytest.mark.parametrize("message, field", [
    ({"type": "track", "userId": "u", "event": "  "}, "event"),
    ({"type": "track", "userId": "u", "event": 5}, "event"),
    ({"type": "group", "userId": "u", "groupId": ""}, "groupId"),
    ({"type": "group", "userId": "u", "groupId": True}, "groupId"),
    ({"type": "page", "userId": "u", "name": "x", "properties": "no"}, "properties"),
    ({"type": "page", "userId": "u", "name": "x", "timestamp": 1714419600}, "timestamp"),
], ids=["blank event", "event not text", "empty groupId", "groupId true",
        "properties not an object", "numeric timestamp"])
def test_a_malformed_call_is_not_a_segment_message(message: dict[str, Any], field: str) -> None:
    with pytest.raises(NotASegmentMessage) as raised:
        actions(message)
    assert raised.value.field_name == field


def test_translators_do_not_change_the_message() -> None:
    message = {"type": "identify", "userId": "u", "traits": {
        "address": {"city": "Austin"}, "createdAt": 1, "tags": ["a"]}}
    snapshot = repr(message)
    actions(message)
    assert repr(message) == snapshot
