"""Segment → Drift: a contact counts as the user's only when its externalId is exactly the
user's id, and a write Drift refuses is dead-lettered with what Drift said.

Drift's externalId search may match more loosely than the id (case, say): an identify for
``carol`` must never write onto the contact of ``Carol``. When no candidate matches exactly
it is "no contact": created when the call carries an email, else retried as not-yet.

The first tests need no database and no socket (``responses`` stands in for Drift); the last
ones run the real endpoint and delivery loop against a loopback fake Drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.destinations.drift import DriftWrites, NotYet
from drift_segment_source.drift_api import Credentials, DriftApi, DriftApiError
from drift_segment_source.logs import REDACTOR
from drift_segment_source.sources.segment.translators import Upsert

from ..support.fake_drift import FakeDrift as FakeDriftContacts
from ..support.webhooks import SECRET, headers, stringify
from .conftest import FIXED_RECEIPT, AppFactory

DRIFT = "https://drift.test"
SEARCH = f"{DRIFT}/contacts?idType=external&id=carol"
CAROL_CAPITAL = {"id": 21760538950, "createdAt": 1714300000000,
                 "attributes": {"email": "carol@corp.example", "externalId": "Carol"}}
CAROL = {"id": 21760539999, "createdAt": 1714300000001,
         "attributes": {"email": "carol@home.example", "externalId": "carol"}}
CREDENTIALS = Credentials("drift-access-token-test")


@pytest.fixture
def drift_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def api() -> DriftApi:
    return DriftApi(DRIFT, timeout=5)


# -- the lookup -------------------------------------------------------------------------------


def test_a_candidate_whose_external_id_differs_is_no_contact(
        drift_api: responses.RequestsMock) -> None:
    drift_api.get(SEARCH, json={"data": [CAROL_CAPITAL]})
    assert api().contact_by_external_id("carol", CREDENTIALS) is None


def test_the_exact_match_is_chosen_among_near_misses(drift_api: responses.RequestsMock) -> None:
    drift_api.get(SEARCH, json={"data": [CAROL_CAPITAL, CAROL]})
    assert api().contact_by_external_id("carol", CREDENTIALS) == CAROL


def test_a_single_object_answer_counts_only_when_exact(
        drift_api: responses.RequestsMock) -> None:
    drift_api.get(SEARCH, json={"data": CAROL_CAPITAL})
    assert api().contact_by_external_id("carol", CREDENTIALS) is None


@pytest.mark.parametrize("near_miss", ["Carol", "carol ", " carol", "CAROL", "caro", 7])
def test_only_the_exact_string_matches(drift_api: responses.RequestsMock,
                                       near_miss: Any) -> None:
    contact = {"id": 5, "attributes": {"externalId": near_miss}}
    drift_api.get(SEARCH, json={"data": [contact]})
    assert api().contact_by_external_id("carol", CREDENTIALS) is None


def test_an_identify_without_email_for_a_near_miss_is_not_yet(
        drift_api: responses.RequestsMock) -> None:
    drift_api.get(SEARCH, json={"data": [CAROL_CAPITAL]})
    action = Upsert(external_id="carol", contact_id=None, email=None,
                    attributes={"name": "Carol B"})
    outcome = DriftWrites(api()).apply(0, [action], CREDENTIALS)
    assert isinstance(outcome, NotYet)
    assert "externalId 'carol'" in outcome.reason  # and no PATCH of Carol's contact


# -- what Drift said, in the reason -----------------------------------------------------------


@pytest.mark.parametrize("status, body, said", [
    (409, {"error": {"type": "conflict", "message": "externalId exists"}},
     "Drift API 409: Conflict: externalId exists"),
    (422, {"message": "email is not a valid email address"},
     "Drift API 422: Unprocessable Entity: email is not a valid email address"),
    (400, {"error": "attributes must be flat"},
     "Drift API 400: Bad Request: attributes must be flat"),
    (400, {"errors": [{"message": "a"}, {"message": "b"}]}, "Drift API 400: Bad Request: a; b"),
    (400, {"error": {"type": "bad_request"}}, "Drift API 400: Bad Request: bad_request"),
    (400, {"data": {}}, "Drift API 400: Bad Request"),
])
def test_a_refusal_carries_drifts_own_message(drift_api: responses.RequestsMock, status: int,
                                              body: dict[str, Any], said: str) -> None:
    drift_api.post(f"{DRIFT}/contacts", json=body, status=status)
    with pytest.raises(DriftApiError) as refused:
        api().create_contact({"email": "carol@home.example"}, CREDENTIALS)
    assert str(refused.value) == said
    assert not refused.value.retryable


def test_a_text_answer_is_read_too(drift_api: responses.RequestsMock) -> None:
    drift_api.post(f"{DRIFT}/contacts", body="no  such\n field", status=400,
                   content_type="text/plain")
    with pytest.raises(DriftApiError, match=r"^Drift API 400: Bad Request: no such field$"):
        api().create_contact({"email": "x@y.z"}, CREDENTIALS)


def test_what_drift_said_is_redacted_and_trimmed(drift_api: responses.RequestsMock) -> None:
    REDACTOR.add(["orgwritekey0123456789abcdefXYZ"])
    echoed = ("rejected token=drift-at-secret-value and Bearer abcdefghijklmnop "
              "orgwritekey0123456789abcdefXYZ " + "x" * 5000)
    drift_api.post(f"{DRIFT}/contacts", json={"error": {"message": echoed}}, status=400)
    with pytest.raises(DriftApiError) as refused:
        api().create_contact({"email": "x@y.z"}, CREDENTIALS)
    message = str(refused.value)
    assert "drift-at-secret-value" not in message and "abcdefghijklmnop" not in message
    assert "orgwritekey0123456789abcdefXYZ" not in message and "[redacted]" in message
    assert len(message) < 400 and message.endswith("…")


# -- through the service ----------------------------------------------------------------------


@pytest.fixture
def drift() -> Iterator[FakeDriftContacts]:
    with FakeDriftContacts() as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, drift: FakeDriftContacts) -> Flask:
    return make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                    CLOCK=lambda: FIXED_RECEIPT)


def identify(user_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": f"i-{user_id}", "userId": user_id,
            "timestamp": "2024-04-29T19:40:00.123Z", "traits": traits}


def send(app: Flask, message: dict[str, Any]) -> None:
    body = stringify(message)
    answer = app.test_client().post("/webhooks/segment", data=body, headers=headers(body))
    assert answer.get_json()["status"] == "accepted", answer.get_json()


def test_carols_email_never_lands_on_the_contact_of_capital_carol(
        app: Flask, drift: FakeDriftContacts) -> None:
    drift.case_insensitive_search = True
    drift.add_contact(CAROL_CAPITAL)
    send(app, identify("carol", email="carol@home.example"))
    make_delivery(app).run_round()
    assert drift.contacts[CAROL_CAPITAL["id"]] == CAROL_CAPITAL
    assert drift.by_external_id("carol")["attributes"]["email"] == "carol@home.example"
    assert [call["request"].split(" ")[0] for call in drift.calls] == ["GET", "POST"]


def test_a_near_miss_without_email_waits_and_writes_nothing(
        app: Flask, drift: FakeDriftContacts) -> None:
    drift.case_insensitive_search = True
    drift.add_contact(CAROL_CAPITAL)
    send(app, identify("carol", name="Carol B"))
    make_delivery(app).run_round()
    assert drift.contacts[CAROL_CAPITAL["id"]] == CAROL_CAPITAL
    [waiting] = app.extensions["store"].retrying()
    assert "no contact with externalId 'carol'" in waiting["last_error"]


def test_a_conflict_is_dead_lettered_with_drifts_message(
        app: Flask, drift: FakeDriftContacts) -> None:
    drift.add_contact(CAROL)
    # The lookup finds Carol; the PATCH (the second call) is refused.
    drift.fail_every(2, 409, answer={"error": {"type": "conflict",
                                               "message": "email belongs to another contact"}})
    send(app, identify("carol", name="Carol B"))
    make_delivery(app).run_round()
    assert [call["request"].split(" ")[0] for call in drift.calls] == ["GET", "PATCH"]
    [dead] = app.extensions["store"].dead_letters()
    assert dead["last_error"] == "Drift API 409: Conflict: email belongs to another contact"
