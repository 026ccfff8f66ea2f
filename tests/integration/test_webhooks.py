"""POST /webhooks/drift answers every input as docs/reliability.md#what-every-request-gets says,
and keeps only what it should."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import FIXTURES, TOKEN, AppFactory, webhook

CONVERSATION = json.loads((FIXTURES / "new_conversation" / "seed_example.json").read_text())


def post(client: FlaskClient, body: Any, headers: dict[str, str] | None = None,
         content_type: str = "application/json") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/webhooks/drift", data=data, headers=headers or {},
                       content_type=content_type)


def stored(app: Flask) -> dict[tuple[str, str], int]:
    return app.extensions["store"].counts()


def quarantined(app: Flask) -> list[dict[str, Any]]:
    return app.extensions["store"].quarantined()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_valid_webhook_is_accepted_with_its_id_after_it_is_stored(app: Flask,
                                                                   client: FlaskClient) -> None:
    answer = post(client, CONVERSATION)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "accepted" and isinstance(body["id"], int)
    assert stored(app) == {("new_conversation", "pending"): 1}


def test_stored_webhook_has_no_token(app: Flask, client: FlaskClient) -> None:
    post(client, CONVERSATION, headers={"X-Verification-Token": TOKEN})
    with app.extensions["store"].engine.connect() as connection:
        payload = connection.exec_driver_sql("SELECT payload FROM webhooks").scalar_one()
    assert TOKEN not in payload
    assert json.loads(payload)["data"] == CONVERSATION["data"]


def test_same_drift_event_again_is_a_duplicate_and_stores_nothing_new(
        app: Flask, client: FlaskClient) -> None:
    assert post(client, CONVERSATION).get_json()["status"] == "accepted"
    again = post(client, CONVERSATION)
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate"}
    assert stored(app) == {("new_conversation", "pending"): 1}


def test_redelivery_with_changed_unimportant_fields_is_still_a_duplicate(
        client: FlaskClient) -> None:
    post(client, CONVERSATION)
    changed = json.loads(json.dumps(CONVERSATION))
    changed["data"]["someNewDriftField"] = "x"
    assert post(client, changed).get_json() == {"status": "duplicate"}


def test_unknown_type_is_ignored_with_200_and_not_stored(app: Flask,
                                                         client: FlaskClient) -> None:
    answer = post(client, webhook("new_message", {"id": 1, "body": "hi"}))
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "ignored"
    assert stored(app) == {}


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN[:-1], TOKEN + "x"])
def test_missing_or_wrong_token_is_401_and_stores_nothing(app: Flask, client: FlaskClient,
                                                          token: str | None) -> None:
    body = dict(CONVERSATION)
    body.pop("token")
    if token is not None:
        body["token"] = token
    answer = post(client, body)
    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"
    assert stored(app) == {} and quarantined(app) == []


def test_token_in_header_alone_is_enough(client: FlaskClient) -> None:
    body = {key: value for key, value in CONVERSATION.items() if key != "token"}
    answer = post(client, body, headers={"X-Verification-Token": TOKEN})
    assert answer.get_json()["status"] == "accepted"


def test_rotation_accepts_every_listed_token(make_app: AppFactory) -> None:
    client = make_app(DRIFT_VERIFICATION_TOKEN="old-token-1234, new-token-5678").test_client()
    for token in ("old-token-1234", "new-token-5678"):
        body = webhook("new_conversation", {"id": hash(token) % 10**9, "contactId": 1},
                       token=token)
        assert post(client, body).get_json()["status"] == "accepted"
    assert post(client, webhook("new_conversation", {"id": 5, "contactId": 1},
                                token="old-token-1234, new-token-5678")).status_code == 401


def test_no_configured_token_refuses_everything(make_app: AppFactory) -> None:
    client = make_app(DRIFT_VERIFICATION_TOKEN="").test_client()
    body = dict(CONVERSATION, token="")
    assert post(client, body, headers={"X-Verification-Token": ""}).status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"{not json", "application/json", "invalid_json"),
        (b"\xff\xfe", "application/json", "invalid_json"),
        (b'{"type": NaN}', "application/json", "invalid_json"),
        (b"", "application/json", "invalid_json"),
        (json.dumps(CONVERSATION).encode(), "text/plain", "unsupported_content_type"),
        (json.dumps(CONVERSATION).encode(), "application/x-www-form-urlencoded",
         "unsupported_content_type"),
    ],
    ids=["broken", "not-utf8", "nan", "empty", "text-plain", "form"],
)
def test_not_json_or_wrong_content_type_is_400_naming_the_problem(
        app: Flask, client: FlaskClient, body: bytes, content_type: str, error: str) -> None:
    answer = post(client, body, content_type=content_type,
                  headers={"X-Verification-Token": TOKEN})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == error
    assert answer.get_json()["message"]
    assert stored(app) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"orgId": 1, "data": {}}, "type"),
        ({"type": "", "orgId": 1, "data": {}}, "type"),
        ({"type": "new_conversation", "data": {}}, "orgId"),
        ({"type": "new_conversation", "orgId": "abc", "data": {}}, "orgId"),
        ({"type": "new_conversation", "orgId": True, "data": {}}, "orgId"),
        ({"type": "new_conversation", "orgId": 1}, "data"),
        ({"type": "new_conversation", "orgId": 1, "data": [1, 2]}, "data"),
        ({"type": "new_conversation", "orgId": 1, "data": "x"}, "data"),
    ],
)
def test_incomplete_envelope_is_400_naming_the_field(app: Flask, client: FlaskClient,
                                                     body: dict[str, Any], field: str) -> None:
    answer = post(client, {**body, "token": TOKEN})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_envelope"
    assert field in answer.get_json()["fields"]
    assert stored(app) == {} and quarantined(app) == []


def test_json_array_body_with_header_token_is_400(client: FlaskClient) -> None:
    answer = post(client, [1, 2], headers={"X-Verification-Token": TOKEN})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_envelope"


def test_bad_data_for_a_known_type_is_422_with_field_errors_and_quarantined(
        app: Flask, client: FlaskClient) -> None:
    body = webhook("new_conversation", {"id": "not-an-id", "createdAt": 1714419312})
    answer = post(client, body)
    assert answer.status_code == 422
    result = answer.get_json()
    assert result["error"] == "invalid_data"
    assert set(result["fields"]) == {"id", "contactId", "createdAt"}
    assert "seconds" in result["fields"]["createdAt"][0]
    assert stored(app) == {}
    [kept] = quarantined(app)
    assert kept["id"] == result["quarantineId"]
    assert kept["event_type"] == "new_conversation"


def test_quarantined_payload_has_no_token(app: Flask, client: FlaskClient) -> None:
    post(client, webhook("new_conversation", {"id": "bad"}))
    with app.extensions["store"].engine.connect() as connection:
        payload = connection.exec_driver_sql("SELECT payload FROM quarantine").scalar_one()
    assert TOKEN not in payload


def test_body_over_the_limit_is_413_and_stores_nothing(make_app: AppFactory) -> None:
    app = make_app(MAX_BODY_BYTES=2048)
    body = webhook("new_conversation", {"id": 1, "contactId": 2, "padding": "x" * 4096})
    answer = post(app.test_client(), body)
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "payload_too_large"
    assert stored(app) == {}


def test_chunked_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    app = make_app(MAX_BODY_BYTES=2048)
    body = json.dumps(webhook("new_conversation", {"id": 1, "contactId": 2,
                                                   "padding": "x" * 4096})).encode()
    answer = app.test_client().post(
        "/webhooks/drift", input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        # gunicorn marks a chunked body as terminated; werkzeug reads it only then.
        environ_overrides={"wsgi.input_terminated": True})
    assert answer.status_code == 413


def test_size_is_checked_before_the_token(make_app: AppFactory) -> None:
    app = make_app(MAX_BODY_BYTES=100)
    answer = post(app.test_client(), b"x" * 500, content_type="application/json")
    assert answer.status_code == 413


def test_json_is_checked_before_the_token(client: FlaskClient) -> None:
    assert post(client, b"{oops").status_code == 400


def test_token_is_checked_before_the_envelope(client: FlaskClient) -> None:
    assert post(client, {"type": "new_conversation"}).status_code == 401


def test_token_is_checked_before_the_type(client: FlaskClient) -> None:
    assert post(client, webhook("new_message", {}, token="wrong")).status_code == 401


def test_unknown_type_is_ignored_before_its_data_is_checked(client: FlaskClient) -> None:
    assert post(client, webhook("new_message", {"id": "whatever"})).status_code == 200


def test_store_unavailable_is_503_so_drift_may_retry(make_app: AppFactory) -> None:
    app = make_app(STORE_FAULT="unavailable")
    answer = post(app.test_client(), CONVERSATION)
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "store_unavailable"


def test_missing_schema_is_503_not_500(make_app: AppFactory, tmp_path: Any) -> None:
    from drift_segment_source import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
                      "DRIFT_VERIFICATION_TOKEN": TOKEN})
    assert post(app.test_client(), CONVERSATION).status_code == 503


def test_other_paths_and_methods_answer_json(client: FlaskClient) -> None:
    assert client.get("/webhooks/drift").status_code == 405
    assert client.get("/webhooks/drift").get_json()["error"] == "method_not_allowed"
    assert client.get("/nope").get_json()["error"] == "not_found"


def test_request_id_is_echoed(client: FlaskClient) -> None:
    answer = post(client, CONVERSATION, headers={"X-Request-Id": "abc-123"})
    assert answer.headers["X-Request-Id"] == "abc-123"


def test_big_ids_survive_storage_exactly(app: Flask, client: FlaskClient) -> None:
    big = 2**63 - 1
    post(client, webhook("new_conversation", {"id": big, "contactId": big - 1}))
    with app.extensions["store"].engine.connect() as connection:
        payload = connection.exec_driver_sql("SELECT payload FROM webhooks").scalar_one()
    assert json.loads(payload)["data"] == {"id": big, "contactId": big - 1}


def test_concurrent_webhooks_share_commits_and_each_gets_its_own_answer(
        app: Flask) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [webhook("new_conversation", {"id": n, "contactId": 1}) for n in range(60)]
    bodies += bodies[:10]  # redeliveries racing their originals

    def send(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = post(app.test_client(), body).get_json()
        return result

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, bodies))
    accepted = [answer["id"] for answer in answers if answer["status"] == "accepted"]
    assert len(accepted) == 60 == len(set(accepted))
    assert sum(answer["status"] == "duplicate" for answer in answers) == 10
    assert stored(app) == {("new_conversation", "pending"): 60}


def test_a_dropped_database_connection_is_replaced_without_losing_the_webhook(
        postgres_url: str) -> None:
    import sqlalchemy

    from drift_segment_source import create_app

    app = create_app({"DATABASE_URL": postgres_url, "DRIFT_VERIFICATION_TOKEN": TOKEN})
    store = app.extensions["store"]
    store.migrate()
    client = app.test_client()
    try:
        assert post(client, webhook("new_conversation", {"id": 1, "contactId": 2})
                    ).get_json()["status"] == "accepted"
        # The server drops every other connection, as after a failover or restart.
        admin = sqlalchemy.create_engine(postgres_url.replace("postgresql://",
                                                              "postgresql+psycopg://"))
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        admin.dispose()
        answer = post(client, webhook("new_conversation", {"id": 3, "contactId": 4}))
        assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
        assert stored(app) == {("new_conversation", "pending"): 2}
    finally:
        store.close()
