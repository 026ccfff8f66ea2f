"""``POST /webhooks/segment``: the signature, the answers, what is stored (see
docs/segment-to-drift.md#what-every-segment-request-gets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from ..support.webhooks import SECRET, received, sign, stringify
from .conftest import AppFactory


def identify(message_id: str = "m-1", **extra: Any) -> dict[str, Any]:
    """A Segment identify as Segment's Webhooks destination forwards it."""
    return {"type": "identify", "messageId": message_id, "userId": "user-8841",
            "anonymousId": "507f191e-810c-4197-9f3d-13f3b4dc3a1d",
            "traits": {"email": "ada@example.com", "name": "Ada"},
            "timestamp": "2024-04-29T19:35:12.996Z", "integrations": {}, **extra}


def track(message_id: str = "t-1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": message_id, "userId": "user-8841",
            "event": "Order Completed", "timestamp": "2024-04-29T19:40:00.123Z", **extra}


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app(SEGMENT_SHARED_SECRET=SECRET)


def post(app: Flask, body: bytes, signature: str | None = None, *,
         content_type: str = "application/json", path: str = "/webhooks/segment",
         user_agent: str = "Segment (Actions)") -> TestResponse:
    request_headers = {"Content-Type": content_type, "User-Agent": user_agent}
    if signature is not None:
        request_headers["X-Signature"] = signature
    return app.test_client().post(path, data=body, headers=request_headers)


def send(app: Flask, message: Any) -> TestResponse:
    """Post ``message`` signed as Webhooks (Actions) signs it."""
    body = stringify(message)
    return post(app, body, sign(body))


def stored(app: Flask) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = app.extensions["store"].counts()
    return counts


# -- the signature --------------------------------------------------------------------------


def test_a_message_signed_with_the_secret_is_accepted(app: Flask) -> None:
    answer = send(app, identify())
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "accepted", "id": 1}
    assert stored(app) == {("segment:identify", "pending"): 1}


def test_a_wrong_signature_is_401_and_nothing_is_stored(app: Flask) -> None:
    body = stringify(identify())
    answer = post(app, body, sign(body, "another-secret"))
    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"
    assert stored(app) == {}


def test_a_missing_signature_is_401(app: Flask) -> None:
    assert post(app, stringify(identify())).status_code == 401
    assert post(app, stringify(identify()), "").status_code == 401


def test_a_rotated_secret_list_accepts_each_secret_and_no_other(make_app: AppFactory) -> None:
    app = make_app(SEGMENT_SHARED_SECRET="old-secret, new-secret")
    body = stringify(identify())
    assert post(app, body, sign(body, "old-secret")).get_json()["status"] == "accepted"
    assert post(app, body, sign(body, "new-secret")).get_json()["status"] == "duplicate"
    assert post(app, body, sign(body, "old-secret,new-secret")).status_code == 401
    assert post(app, body, sign(body, "third-secret")).status_code == 401


def test_the_signature_hex_is_read_in_either_case(app: Flask) -> None:
    body = stringify(identify())
    assert post(app, body, sign(body).upper()).status_code == 200


def test_a_batch_signed_on_its_first_element_is_accepted(app: Flask) -> None:
    """Webhooks (Actions) with batching signs JSON.stringify(first event) only."""
    messages = [identify("m-1", receivedAt=received()), track("t-1"),
                track("t-2", event="Cart Viewed")]
    answer = post(app, stringify(messages), sign(stringify(messages[0])))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["counts"] == {"accepted": 3}
    assert [result["status"] for result in answer.get_json()["results"]] == ["accepted"] * 3
    assert stored(app) == {("segment:identify", "pending"): 1, ("segment:track", "pending"): 2}


def test_a_batch_signed_whole_is_accepted(app: Flask) -> None:
    messages = [identify("m-1"), track("t-1")]
    body = stringify(messages)
    assert post(app, body, sign(body)).get_json()["counts"] == {"accepted": 2}


def test_a_pretty_printed_batch_is_read_byte_for_byte(app: Flask) -> None:
    first = identify("m-1", receivedAt=received())
    body = b"[\n  " + json.dumps(first, indent=2).encode() + b",\n  " + stringify(track()) + b"\n]"
    first_bytes = json.dumps(first, indent=2).encode()
    assert post(app, body, sign(first_bytes)).get_json()["counts"] == {"accepted": 2}


def test_a_tampered_body_is_401(app: Flask) -> None:
    body = stringify(identify())
    signature = sign(body)
    assert post(app, body.replace(b"Ada", b"Eve"), signature).status_code == 401
    messages = [identify(), track()]
    first_signed = sign(stringify(messages[0]))
    tampered_first = stringify([identify(traits={"email": "eve@example.com"}), track()])
    assert post(app, tampered_first, first_signed).status_code == 401
    assert stored(app) == {}


def test_with_a_first_element_signature_later_elements_are_not_authenticated(
        app: Flask) -> None:
    """The documented cost of Segment's batching quirk: only the first element is signed,
    so while it is recent, elements placed after it are taken as they come."""
    first = identify(receivedAt=received(hours_ago=1))
    appended = stringify([first, track("t-added", event="Anything")])
    assert post(app, appended, sign(stringify(first))).get_json()["counts"] == {"accepted": 2}


def test_a_captured_signed_message_cannot_carry_forged_elements_later(app: Flask) -> None:
    """A signed message seen once (a Classic request, a log line) is no key for ever: a
    batch signed over its first element only needs that element to be recent."""
    captured = identify("m-old", receivedAt=received(hours_ago=13))
    body = stringify(captured)
    assert post(app, body, sign(body)).get_json()["status"] == "accepted"  # signed whole
    forged = stringify([captured, identify("m-forged", traits={"email": "eve@example.com"})])
    answer = post(app, forged, sign(body))
    assert answer.status_code == 401
    assert "SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS" in answer.get_json()["message"]
    assert stored(app) == {("segment:identify", "pending"): 1}


def test_a_first_element_signature_needs_a_time_segment_set(app: Flask) -> None:
    """``timestamp`` can be any time the sender chose (imports): only Segment's receivedAt
    or the library's sentAt tell a fresh batch from a replay."""
    first = identify()
    assert "receivedAt" not in first and "sentAt" not in first
    answer = post(app, stringify([first, track()]), sign(stringify(first)))
    assert answer.status_code == 401
    assert "receivedAt" in answer.get_json()["message"]
    in_the_future = identify(sentAt=received(hours_ago=-13))
    answer = post(app, stringify([in_the_future, track()]), sign(stringify(in_the_future)))
    assert answer.status_code == 401
    assert stored(app) == {}


def test_a_signed_element_ahead_of_this_hosts_clock_is_fresh_up_to_the_age_limit(
        app: Flask) -> None:
    """This host's clock may be behind Segment's by hours (or a correction not believed yet):
    an element ahead by less than the age limit is fresh, not a replay."""
    ahead = identify(receivedAt=received(hours_ago=-3))
    answer = post(app, stringify([ahead, track()]), sign(stringify(ahead)))
    assert answer.status_code == 200, answer.get_json()


def test_the_signed_element_age_limit_is_a_setting(make_app: AppFactory) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS=24)
    first = identify(sentAt=received(hours_ago=13))
    answer = post(app, stringify([first, track()]), sign(stringify(first)))
    assert answer.get_json()["counts"] == {"accepted": 2}


def test_a_classic_single_message_is_verified_over_its_raw_bytes(app: Flask) -> None:
    """Webhooks (Classic) signs the body as sent; a re-serialised body would not match."""
    body = json.dumps(identify(), indent=4, ensure_ascii=True).encode()
    assert stringify(json.loads(body)) != body
    answer = post(app, body, sign(body), user_agent="Segment.io/1.0")
    assert answer.get_json()["status"] == "accepted"


def test_the_endpoint_is_404_without_a_shared_secret(make_app: AppFactory) -> None:
    app = make_app()
    body = stringify(identify())
    assert post(app, body, sign(body)).status_code == 404


# -- the answers ----------------------------------------------------------------------------


def test_an_oversize_body_is_413_before_the_signature(make_app: AppFactory) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, MAX_BODY_BYTES=1000)
    body = stringify(identify(traits={"bio": "x" * 2000}))
    assert post(app, body).status_code == 413
    assert post(app, body, sign(body)).status_code == 413


def test_a_body_that_is_not_json_is_401_unsigned_and_400_signed(app: Flask) -> None:
    assert post(app, b"not json").status_code == 401
    answer = post(app, b"not json", sign(b"not json"))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_json"


def test_a_wrong_media_type_is_400(app: Flask) -> None:
    body = stringify(identify())
    answer = post(app, body, sign(body), content_type="text/plain")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "unsupported_content_type"


@pytest.mark.parametrize("message, field", [
    ({"userId": "u"}, "type"),
    ({"type": "", "userId": "u"}, "type"),
    ({"type": "identify", "traits": {"name": "Ada"}}, "userId"),
    ({"type": "track", "userId": "", "anonymousId": None, "event": "x"}, "userId"),
    ({"type": "track", "userId": "u"}, "event"),
    ({"type": "group", "userId": "u", "traits": {}}, "groupId"),
    ({"type": "identify", "userId": "u", "traits": ["not", "an", "object"]}, "traits"),
    ({"type": "track", "userId": "u", "event": "x", "timestamp": "yesterday"}, "timestamp"),
], ids=["no type", "empty type", "no user", "empty user", "track without event",
        "group without groupId", "traits not an object", "timestamp not ISO 8601"])
def test_a_message_without_what_segment_always_sends_is_400(app: Flask, message: dict[str, Any],
                                                            field: str) -> None:
    answer = send(app, message)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_message"
    assert field in answer.get_json()["fields"]
    assert stored(app) == {}


@pytest.mark.parametrize("document", [[], "identify", 42, None], ids=repr)
def test_a_body_that_is_no_message_is_400(app: Flask, document: Any) -> None:
    answer = send(app, document)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_message"


def test_what_the_store_cannot_carry_is_400(app: Flask) -> None:
    body = stringify(identify()).replace(b'"Ada"', b'"\\ud83d"')
    answer = post(app, body, sign(body))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_unicode"
    deep: Any = "bottom"
    for _ in range(40):
        deep = {"nested": deep}
    answer = send(app, identify(traits={"email": "a@b.c", "deep": deep}))
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "json_too_deep"
    assert stored(app) == {}


def test_an_unavailable_store_is_503_so_segment_retries(make_app: AppFactory) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, STORE_FAULT="unavailable")
    answer = send(app, identify())
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "store_unavailable"
    assert send(app, [identify(), track()]).status_code == 503


@pytest.mark.parametrize("message, reason", [
    ({"type": "alias", "userId": "new", "previousId": "old"}, "alias is not relayed"),
    ({"type": "delete", "userId": "u"}, "delete is not relayed"),
    ({"type": "delete"}, "delete is not relayed"),
    ({"type": "unknown_call", "userId": "u"}, "'unknown_call' is not relayed"),
    ({"type": "identify", "anonymousId": "anon-1", "traits": {"email": "a@b.c"}},
     "without a userId, id or username"),
    ({"type": "identify", "userId": "u", "traits": {"id": "u"}}, "without traits"),
    ({"type": "track", "anonymousId": "anon-1", "event": "x"},
     "not a Drift contact id"),
    ({"type": "page", "userId": "u", "properties": {"path": "/"}}, "without a name"),
], ids=["alias", "delete", "delete without user", "unknown type", "identify without user id",
        "identify without traits", "anonymous track", "page without a name"])
def test_calls_drift_cannot_take_are_ignored_with_the_reason(
        app: Flask, message: dict[str, Any], reason: str) -> None:
    answer = send(app, {"messageId": "x-1", **message})
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "ignored"
    assert reason in answer.get_json()["reason"]
    assert stored(app) == {}


def test_the_same_message_id_again_is_a_duplicate(app: Flask) -> None:
    assert send(app, identify("m-1")).get_json()["status"] == "accepted"
    assert send(app, identify("m-1")).get_json() == {"status": "duplicate"}
    # Segment's messageId is the identity: a copy with other fields is still the same call.
    changed = identify("m-1", traits={"name": "Ada L."})
    assert send(app, changed).get_json() == {"status": "duplicate"}
    assert send(app, identify("m-2")).get_json()["status"] == "accepted"
    assert stored(app) == {("segment:identify", "pending"): 2}


def test_without_a_message_id_the_content_is_the_identity(app: Flask) -> None:
    message = identify()
    del message["messageId"]
    assert send(app, message).get_json()["status"] == "accepted"
    assert send(app, message).get_json()["status"] == "duplicate"
    assert send(app, {**message, "traits": {"name": "Ada L."}}).get_json()["status"] == "accepted"


def test_a_batch_answers_each_message_and_stores_the_sound_ones(app: Flask) -> None:
    messages = [identify("m-1"), {"type": "track", "userId": "u"}, "not an object",
                {"type": "alias", "userId": "a", "previousId": "b"}, identify("m-1"),
                track("t-1")]
    answer = send(app, messages)
    assert answer.status_code == 200
    results = answer.get_json()["results"]
    assert [result["status"] for result in results] == [
        "accepted", "rejected", "rejected", "ignored", "duplicate", "accepted"]
    assert results[1]["fields"] == {"event": "required: the name of the tracked event"}
    assert answer.get_json()["counts"] == {"accepted": 2, "rejected": 2, "ignored": 1,
                                           "duplicate": 1}
    assert stored(app) == {("segment:identify", "pending"): 1, ("segment:track", "pending"): 1}


# -- the loop guard -------------------------------------------------------------------------


@pytest.mark.parametrize("extra, reason", [
    ({"context": {"integration": {"name": "drift-segment-source", "version": "0.1.0"}}},
     "loop guard"),
    ({"integrations": {"Drift": False}}, "integrations.Drift is false"),
    ({"integrations": {"All": False}}, "integrations.All is false"),
    ({"integrations": {"All": False, "Drift": False}}, "integrations.Drift is false"),
], ids=["sent by this service", "Drift false", "All false", "both false"])
def test_the_loop_guard_ignores_what_must_not_reach_drift(app: Flask, extra: dict[str, Any],
                                                          reason: str) -> None:
    answer = send(app, identify(**extra))
    assert answer.get_json()["status"] == "ignored"
    assert reason in answer.get_json()["reason"]
    assert stored(app) == {}


def test_all_false_with_drift_true_is_relayed(app: Flask) -> None:
    answer = send(app, identify(integrations={"All": False, "Drift": True}))
    assert answer.get_json()["status"] == "accepted"


def test_another_integration_name_is_relayed(app: Flask) -> None:
    answer = send(app, identify(context={"integration": {"name": "some-other-source"}}))
    assert answer.get_json()["status"] == "accepted"


def test_widget_events_of_the_client_script_are_not_echoed_into_drift(app: Flask) -> None:
    """/drift-segment.js tracks Drift's widget events in the browser, with no way to mark
    them; Segment forwards them here like any track. They happened in Drift."""
    echoed = track("t-widget", event="Drift Source Event: Conversation Started",
                   anonymousId="1234567890", properties={"conversationId": 42})
    answer = send(app, echoed)
    assert answer.get_json()["status"] == "ignored"
    assert "loop guard" in answer.get_json()["reason"]
    similar = track("t-own", event="Drift Source Eventually Consistent")
    assert send(app, similar).get_json()["status"] == "accepted"
    assert stored(app) == {("segment:track", "pending"): 1}


def test_a_batch_body_is_looked_at_once_not_once_per_message(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanning the whole body for each message cost messages × body size (12,000
    messages of a 1 MB body took 15 s, past Segment's 10 s wait)."""
    from drift_segment_source.sources import door
    looks: list[int] = []
    original = door.WalksNeeded.of.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(door.WalksNeeded, "of", classmethod(
        lambda cls, body: looks.append(len(body)) or original(cls, body)))
    deep = track("t-deep", properties={"a": json.loads("[" * 40 + "]" * 40)})
    lone = stringify(track("t-lone")).replace(b"Order", b"\\ud83d Order")
    messages = [identify("m-1", receivedAt=received())] + [
        track(f"t-{n}") for n in range(60)] + [deep]
    body = stringify(messages)[:-1] + b"," + lone + b"]"
    answer = post(app, body, sign(stringify(messages[0])))
    assert answer.get_json()["counts"] == {"accepted": 61, "rejected": 2}
    errors = [result.get("error") for result in answer.get_json()["results"][-2:]]
    assert errors == ["json_too_deep", "invalid_unicode"]
    assert looks == [len(body)]
