"""Whatever arrives at /webhooks/drift, the answer is never a 5xx, and a refused request
stores nothing (hypothesis-generated bodies and headers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drift_segment_source.sources.drift.translators import TRANSLATORS

from .conftest import TOKEN, AppFactory

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
known_types = st.sampled_from(sorted(TRANSLATORS) + ["new_message", "", "x" * 300])
field_names = st.sampled_from(
    ["id", "contactId", "conversationId", "createdAt", "author", "body", "context", "diff",
     "endUserId", "timestamp", "schedulerId", "scheduledAt", "phoneNumber", "authorType",
     "authorId", "pushedAt", "data", "changedAt", "addedParticipants", "eventId"])
drift_like_data = st.dictionaries(field_names, json_values, max_size=8)
envelopes = st.fixed_dictionaries(
    {},
    optional={"type": known_types | json_values, "orgId": st.integers(-5, 2**64) | json_values,
              "token": st.sampled_from([TOKEN, "wrong", ""]) | json_values,
              "data": drift_like_data | json_values},
)
bodies = (
    envelopes.map(lambda document: json.dumps(document).encode())
    | st.binary(max_size=200)
    | json_values.map(lambda value: json.dumps(value).encode())
)
headers = st.fixed_dictionaries(
    {},
    optional={"X-Verification-Token": st.sampled_from([TOKEN, "nope", ""]),
              "Content-Type": st.sampled_from(["application/json", "text/plain",
                                               "application/json; charset=utf-8",
                                               "application/vnd.api+json", ""])},
)


def row_counts(app: Flask) -> tuple[int, int]:
    with app.extensions["store"].engine.connect() as connection:
        webhooks = connection.exec_driver_sql("SELECT count(*) FROM webhooks").scalar_one()
        quarantined = connection.exec_driver_sql("SELECT count(*) FROM quarantine").scalar_one()
    return int(webhooks), int(quarantined)


def quarantined(app: Flask, body: bytes) -> bool:
    """Whether the quarantine holds this webhook (as stored: without its token)."""
    sent = {key: value for key, value in json.loads(body).items() if key != "token"}
    with app.extensions["store"].engine.connect() as connection:
        payloads = connection.exec_driver_sql("SELECT payload FROM quarantine").scalars()
        return any(json.loads(payload) == sent for payload in payloads)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, request_headers=headers)
def test_no_input_gets_a_5xx_and_refusals_store_nothing(app: Flask, body: bytes,
                                                        request_headers: dict[str, Any]) -> None:
    before = row_counts(app)
    answer = app.test_client().post("/webhooks/drift", data=body, headers=request_headers)
    assert answer.status_code < 500, answer.get_data(as_text=True)
    result = answer.get_json()
    assert isinstance(result, dict), "every answer is a JSON object"
    after = row_counts(app)
    if answer.status_code == 200 and result["status"] == "accepted":
        assert after == (before[0] + 1, before[1])
    elif answer.status_code == 422:
        # Kept in quarantine: a new entry, or the one an identical payload made earlier in
        # this run (the same payload again is kept once).
        assert after[0] == before[0] and after[1] in (before[1], before[1] + 1)
        assert quarantined(app, body), "422 keeps the payload in quarantine"
    else:
        assert after == before, f"{answer.status_code} {result} stored something"
        assert "error" in result or result["status"] in ("duplicate", "ignored")


plausible_values = (
    st.integers(min_value=0, max_value=2**64) | st.integers(1_000_000_000, 2_000_000_000_000)
    | st.text(max_size=20) | st.booleans() | st.none()
    | st.lists(st.integers(0, 2**63), max_size=3)
    | st.fixed_dictionaries({}, optional={"id": st.integers(0, 2**63) | st.text(max_size=5),
                                          "type": st.sampled_from(["contact", "user", 1])})
    | st.lists(st.fixed_dictionaries({"name": st.text(max_size=20)},
                                     optional={"updated": json_values, "previous": json_values}),
               max_size=3)
)
valid_envelopes = st.builds(
    lambda event_type, org, data: {"type": event_type, "orgId": org, "token": TOKEN,
                                   "data": data},
    st.sampled_from(sorted(TRANSLATORS)),
    st.integers(1, 2**63 - 1),
    st.dictionaries(field_names, plausible_values, max_size=10),
)


def test_authentic_webhooks_with_any_data_are_answered_and_delivered_or_dead_lettered(
        make_app: AppFactory) -> None:
    from drift_segment_source.app import make_delivery

    app = make_app(SEGMENT_WRITE_KEY="", DRIFT_ACCESS_TOKEN="")
    delivery = make_delivery(app)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(document=valid_envelopes)
    def check(document: dict[str, Any]) -> None:
        answer = app.test_client().post("/webhooks/drift", json=document)
        assert answer.status_code in (200, 422), answer.get_json()
        delivery.run_round()
        states = {state for _, state in app.extensions["store"].counts()}
        assert states <= {"dry_run", "dead", "held"}, "every stored row got an outcome"

    check()
