"""What the store or Segment cannot carry is refused at the door with a 4xx naming the
problem (docs/reliability.md#what-every-request-gets), never accepted and lost later, never a
5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from drift_segment_source.sources.door import MAX_DEPTH

from .conftest import FIXTURES, TOKEN, AppFactory

CONTACT = 21760538950


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


SEED_WEBHOOK = (FIXTURES / "new_conversation" / "seed_example.json").read_bytes()


def raw_post(app: Flask, text: str) -> tuple[int, dict[str, Any]]:
    """POST a body written by hand (escapes and numbers exactly as given)."""
    answer = app.test_client().post("/webhooks/drift", data=text.encode(),
                                    content_type="application/json",
                                    headers={"X-Verification-Token": TOKEN})
    body: dict[str, Any] = answer.get_json()
    return answer.status_code, body


def conversation(extra: str = "", conversation_id: int = 3969707702,
                 contact: str = str(CONTACT)) -> str:
    """A new_conversation body with ``extra`` spliced into its data, as raw JSON."""
    return ('{"type":"new_conversation","orgId":5000883,"data":{"id":' + str(conversation_id)
            + ',"contactId":' + contact + ',"createdAt":1714419312425,"status":"open"' + extra
            + "}}")


def stored(app: Flask) -> int:
    with app.extensions["store"].engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM webhooks").scalar_one())


@pytest.mark.parametrize("escape", ["\\ud83d", "\\uDE00", "x\\ud83dy", "\\ude00\\ud83d"])
def test_a_lone_surrogate_escape_is_refused_naming_where_it_is(app: Flask, escape: str) -> None:
    status, body = raw_post(app, conversation(f',"note":"{escape}"'))
    assert status == 400
    assert body["error"] == "invalid_unicode"
    assert body["path"] == "data.note"
    assert stored(app) == 0


def test_a_lone_surrogate_in_a_key_is_refused(app: Flask) -> None:
    status, body = raw_post(app, conversation(',"\\ud83d":1'))
    assert (status, body["error"]) == (400, "invalid_unicode")
    assert stored(app) == 0


def test_a_surrogate_pair_escape_is_an_emoji_and_is_accepted(app: Flask) -> None:
    status, body = raw_post(app, conversation(',"note":"\\ud83d\\ude00 and \\\\ud83d"'))
    assert (status, body["status"]) == (200, "accepted")


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_nesting_up_to_the_limit_is_accepted(app: Flask) -> None:
    # data is level 1, "deep" level 2: MAX_DEPTH - 2 more containers reach the limit.
    status, body = raw_post(app, conversation(f',"deep":{nested(MAX_DEPTH - 2)}'))
    assert (status, body["status"]) == (200, "accepted")


@pytest.mark.parametrize("depth", [MAX_DEPTH, 600, 5000])
def test_nesting_past_the_limit_is_refused_not_accepted_and_dead_lettered(
        app: Flask, depth: int) -> None:
    status, body = raw_post(app, conversation(f',"deep":{nested(depth)}'))
    assert status == 400
    assert body["error"] == "json_too_deep"
    assert body["limit"] == MAX_DEPTH
    assert stored(app) == 0


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1E999"])
def test_a_number_json_reads_as_infinity_is_refused(app: Flask, number: str) -> None:
    status, body = raw_post(app, conversation(f',"score":{number}'))
    assert (status, body["error"]) == (400, "invalid_json")
    assert "out of range" in body["message"]


@pytest.mark.parametrize("org_id", ['"' + "9" * 5000 + '"', "9" * 5000, '"' + "9" * 20 + '"',
                                    str(2**63), "-1", "0"])
def test_an_org_id_too_large_or_not_positive_is_a_400_not_a_500(app: Flask,
                                                               org_id: str) -> None:
    text = conversation().replace('"orgId":5000883', f'"orgId":{org_id}')
    status, body = raw_post(app, text)
    assert status == 400
    assert body["error"] in ("invalid_envelope", "invalid_json")


@pytest.mark.parametrize("contact", [str(2**63), str(2**64), '"' + "1" * 20 + '"',
                                     '"' + "9" * 5000 + '"'])
def test_an_id_too_large_for_64_bits_is_a_422_naming_the_field(app: Flask,
                                                                contact: str) -> None:
    status, body = raw_post(app, conversation(contact=contact))
    assert status == 422
    assert "64-bit" in json.dumps(body["fields"]["contactId"])
    assert body["quarantineId"]


def test_a_contact_attribute_too_large_for_64_bits_is_a_422(app: Flask) -> None:
    text = ('{"type":"contact_updated","orgId":5000883,"data":{"endUserId":1,'
            '"timestamp":1714419380512,"diff":[{"name":"attributes.score","updated":'
            + str(2**70) + "}]}}")
    status, body = raw_post(app, text)
    assert status == 422
    assert "64-bit" in json.dumps(body["fields"])


def test_huge_and_negative_numbers_in_fields_nobody_reads_are_carried(app: Flask) -> None:
    status, body = raw_post(app, conversation(f',"x":{2**80},"y":-{2**80},"z":1e308'))
    assert (status, body["status"]) == (200, "accepted")


@pytest.mark.parametrize("name", ["attributes.", "..", "attributes..", ""])
def test_a_contact_change_that_names_no_attribute_is_a_422(app: Flask, name: str) -> None:
    body = {"type": "contact_updated", "orgId": 5000883,
            "data": {"endUserId": 1, "timestamp": 1714419380512,
                     "diff": [{"name": name, "updated": "x"},
                              {"name": "attributes.plan", "updated": "pro"}]}}
    status, answer = raw_post(app, json.dumps(body))
    assert status == 422
    assert "diff" in answer["fields"]


def test_database_errors_never_carry_a_body_into_answers_or_logs(
        tmp_path: Any, capfd: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import text

    from drift_segment_source import create_app
    from drift_segment_source.store.db import make_engine

    # Not migrated: every write fails, with the statement's parameters at hand.
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
                      "DRIFT_VERIFICATION_TOKEN": TOKEN})
    secret = "body-text-that-must-not-leak"
    status, body = raw_post(app, conversation(f',"note":"{secret}"'))
    invalid_status, _ = raw_post(app, conversation(contact='"' + secret + '"'))
    assert (status, invalid_status) == (503, 503)
    assert secret not in json.dumps(body)
    assert secret not in capfd.readouterr().err
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    with pytest.raises(Exception) as raised, engine.connect() as connection:
        connection.execute(text("INSERT INTO nowhere VALUES (:value)"), {"value": secret})
    assert secret not in str(raised.value)
    engine.dispose()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_body_not_in_utf8_is_refused_before_anything_reads_it(app: Flask,
                                                               encoding: str) -> None:
    # json.loads guesses UTF-16/32 from raw bytes; escapes checked in UTF-8 would slip by.
    text = conversation(',"eventId":"\\ud83d"')
    answer = app.test_client().post("/webhooks/drift", data=text.encode(encoding),
                                    content_type="application/json",
                                    headers={"X-Verification-Token": TOKEN})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_json"
    assert stored(app) == 0


def test_an_unauthenticated_body_is_never_walked(app: Flask) -> None:
    # A long key over many children made path strings quadratic in memory before the token
    # was even read: 1 MB of body wanted about 120 GB.
    key = "k" * 400_000
    body = json.dumps({"type": "new_conversation", "orgId": 1,
                       "data": {key: [[0]] * 90_000}}, separators=(",", ":")).encode()
    assert len(body) < 1024 * 1024
    answer = app.test_client().post("/webhooks/drift", data=body,
                                    content_type="application/json",
                                    headers={"X-Verification-Token": "wrong"})
    assert answer.status_code == 401


def test_the_path_of_a_fault_in_a_wide_body_is_spelled_short(app: Flask) -> None:
    key = "k" * 100_000
    text = conversation(f',"{key}":[' + ",".join(["1"] * 1000) + ',"\\ud83d"]')
    status, body = raw_post(app, text)
    assert (status, body["error"]) == (400, "invalid_unicode")
    assert body["path"] == "data." + "k" * 40 + "[1000]"


def test_a_body_shorter_than_its_content_length_is_a_408(make_app: AppFactory) -> None:
    answer = make_app().test_client().post(
        "/webhooks/drift", data=SEED_WEBHOOK[:50], content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(len(SEED_WEBHOOK))})
    assert answer.status_code == 408
    assert answer.get_json()["error"] == "request_timeout"
