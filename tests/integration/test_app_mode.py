"""Drift app mode: OAuth install, the write-key page, per-org routing, token refresh, secrets.

Drift and Segment are loopback fakes (real HTTP); every test runs on SQLite and PostgreSQL.
The same flow in a real browser is in ``test_browser_install.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy
from click.testing import CliRunner
from flask import Flask
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from drift_segment_source import config
from drift_segment_source.app import make_delivery
from drift_segment_source.app_mode.oauth import STATE_SALT
from drift_segment_source.cli import main
from drift_segment_source.store.db import orgs

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .app_mode import (
    CLIENT_ID,
    CLIENT_SECRET,
    ORG_A,
    ORG_B,
    SECRET_KEY,
    WRITE_KEY_A,
    WRITE_KEY_B,
    app_mode_settings,
    authorise,
    conversations_of,
    csrf_token,
    events_by_write_key,
    install,
    webhook_file,
)
from .conftest import TOKEN, AppFactory

NEW_CONVERSATION = "Drift Source Event: new_conversation"
PARTICIPANT_ADDED = "Drift Source Event: conversation_participant_added"


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(CLIENT_ID, CLIENT_SECRET) as fake:
        fake.conversations = conversations_of("conversation_participant_added", "seed_example")
        yield fake



@pytest.fixture
def app_mode(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment
             ) -> Callable[..., Flask]:
    """Build an app-mode app against the fakes."""
    return lambda **overrides: make_app(**app_mode_settings(drift, segment, **overrides))


@pytest.fixture
def service_log(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Everything the service logged so far (its JSON lines on stderr, redaction included)."""
    logged: list[str] = []

    def read() -> str:
        logged.append(capsys.readouterr().err)
        return "".join(logged)

    return read


def post_webhook(app: Flask, body: dict[str, Any]) -> dict[str, Any]:
    answer = app.test_client().post("/webhooks/drift", json=body)
    assert answer.status_code == 200, answer.get_json()
    result: dict[str, Any] = answer.get_json()
    return result


def deliver(app: Flask) -> int:
    return make_delivery(app).run_round()


# -- start-up and pages ---------------------------------------------------------------------


def test_app_mode_refuses_to_start_without_secret_key(app_mode: Callable[..., Flask]) -> None:
    with pytest.raises(config.ConfigError, match="SECRET_KEY"):
        app_mode(SECRET_KEY=None)


def test_landing_page_self_hosted_shows_status_without_install_button(
        make_app: AppFactory) -> None:
    answer = make_app(SEGMENT_WRITE_KEY=None).test_client().get("/")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert '<html lang="en">' in page
    assert "Self-hosted" in page and "Dry-run" in page
    assert "nothing waiting for delivery" in page
    assert "Install to Drift" not in page


def test_landing_page_in_app_mode_offers_install(app_mode: Callable[..., Flask]) -> None:
    page = app_mode().test_client().get("/").get_data(as_text=True)
    assert 'href="/oauth/install">Install to Drift</a>' in page
    assert "many organisations" in page


def test_pages_send_security_headers(app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    client = app_mode().test_client()
    landing = client.get("/")
    csp = landing.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert f"form-action 'self' {drift.url}" in csp
    assert landing.headers["X-Content-Type-Options"] == "nosniff"
    assert landing.headers["Referrer-Policy"] == "no-referrer"
    client.get(authorise(client, drift, ORG_A))
    setup = client.get("/setup")
    assert setup.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in setup.headers["Content-Security-Policy"]


def test_session_cookie_is_httponly_lax_and_secure_behind_https(
        app_mode: Callable[..., Flask]) -> None:
    answer = app_mode(PUBLIC_URL="https://relay.example.com").test_client().get("/oauth/install")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    redirect_uri = parse_qs(urlsplit(answer.headers["Location"]).query)["redirect_uri"]
    assert redirect_uri == ["https://relay.example.com/oauth/callback"]


# -- the install flow -----------------------------------------------------------------------


def test_install_redirects_to_drift_with_client_id_and_signed_state(
        app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    answer = app_mode().test_client().get("/oauth/install")
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == drift.authorize_url
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["client_id"] == CLIENT_ID
    assert query["response_type"] == "code"
    assert query["redirect_uri"] == "http://localhost/oauth/callback"
    URLSafeTimedSerializer(SECRET_KEY, salt=STATE_SALT).loads(query["state"], max_age=600)


def test_callback_stores_tokens_and_shows_write_key_page_for_that_org(
        app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    assert drift.grants == ["authorization_code"]
    page = client.get("/setup").get_data(as_text=True)
    assert str(ORG_A) in page
    assert '<label for="write_key">Segment write key</label>' in page
    org = app.extensions["routing"].directory.get(ORG_A)
    assert org.has_access_token and org.has_refresh_token and not org.has_write_key


def test_camel_case_answer_without_org_id_asks_token_info(
        app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    drift.camel_case, drift.send_org_id = True, False
    app = app_mode()
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B)
    assert drift.token_info_calls == 1
    org = app.extensions["routing"].directory.get(ORG_B)
    assert org.has_refresh_token and org.has_write_key and org.token_expires_at


def test_write_key_is_saved_and_admin_sent_back_to_drift_settings(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    with FakeSegment() as eu_segment:
        app = app_mode(SEGMENT_HOST=segment.url, SEGMENT_EU_HOST=eu_segment.url)
        install(app.test_client(), drift, ORG_A, WRITE_KEY_A, region="eu")
    secrets = app.extensions["routing"].directory.secrets(ORG_A)
    assert (secrets.write_key, secrets.segment_host) == (WRITE_KEY_A, eu_segment.url)
    assert (eu_segment.checks, segment.checks) == ([WRITE_KEY_A], [])


def test_reinstalling_updates_the_org(app_mode: Callable[..., Flask], drift: FakeDrift,
                                      segment: FakeSegment) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    installed_at = app.extensions["routing"].directory.get(ORG_A).installed_at
    install(app.test_client(), drift, ORG_A, WRITE_KEY_B)
    directory = app.extensions["routing"].directory
    assert [org.org_id for org in directory.all()] == [ORG_A]
    assert directory.get(ORG_A).installed_at == installed_at
    post_webhook(app, webhook_file("new_conversation", "seed_example", ORG_A))
    assert deliver(app) == 1
    assert events_by_write_key(segment) == {WRITE_KEY_B: [NEW_CONVERSATION]}


# -- refusals -------------------------------------------------------------------------------


def test_tampered_state_is_refused(app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    app = app_mode()
    client = app.test_client()
    callback = urlsplit(authorise(client, drift, ORG_A))
    query = {key: values[0] for key, values in parse_qs(callback.query).items()}
    query["state"] = query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB")
    answer = client.get(f"{callback.path}?{urlencode(query)}")
    assert answer.status_code == 400
    assert "could not be verified" in answer.get_data(as_text=True)
    assert drift.grants == [] and app.extensions["routing"].directory.all() == []


def test_replayed_state_is_refused(app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    client = app_mode().test_client()
    callback = authorise(client, drift, ORG_A)
    assert client.get(callback).status_code == 303
    replayed = client.get(callback)
    assert replayed.status_code == 400
    assert "Install again" in replayed.get_data(as_text=True)


def test_expired_state_is_refused(app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    client = app_mode().test_client()
    callback = urlsplit(authorise(client, drift, ORG_A))
    query = {key: values[0] for key, values in parse_qs(callback.query).items()}
    nonce = URLSafeTimedSerializer(SECRET_KEY, salt=STATE_SALT).loads(query["state"])["nonce"]

    class ElevenMinutesAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 660

    query["state"] = URLSafeTimedSerializer(SECRET_KEY, salt=STATE_SALT,
                                            signer=ElevenMinutesAgo).dumps({"nonce": nonce})
    answer = client.get(f"{callback.path}?{urlencode(query)}")
    assert answer.status_code == 400
    assert "took too long" in answer.get_data(as_text=True)
    assert drift.grants == []


def test_callback_in_another_browser_is_refused(app_mode: Callable[..., Flask],
                                                drift: FakeDrift) -> None:
    app = app_mode()
    callback = authorise(app.test_client(), drift, ORG_A)
    answer = app.test_client().get(callback)
    assert answer.status_code == 400
    assert "not started in this browser" in answer.get_data(as_text=True)
    assert drift.grants == []


def test_denied_authorisation_shows_a_helpful_page(app_mode: Callable[..., Flask],
                                                    drift: FakeDrift) -> None:
    client = app_mode().test_client()
    started = client.get("/oauth/install")
    callback = urlsplit(drift.approve(started.headers["Location"], ORG_A, decision="deny"))
    answer = client.get(f"{callback.path}?{callback.query}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 403
    assert "was not authorised" in page and "Traceback" not in page
    assert answer.mimetype == "text/html"


def test_code_refused_by_drift_shows_a_helpful_page(app_mode: Callable[..., Flask],
                                                    drift: FakeDrift) -> None:
    app = app_mode()
    client = app.test_client()
    callback = urlsplit(authorise(client, drift, ORG_A))
    query = {key: values[0] for key, values in parse_qs(callback.query).items()}
    query["code"] = "code-that-drift-never-issued"
    answer = client.get(f"{callback.path}?{urlencode(query)}")
    assert answer.status_code == 400
    assert "did not accept the authorisation" in answer.get_data(as_text=True)
    assert app.extensions["routing"].directory.all() == []


def test_drift_unreachable_during_exchange_is_a_502_page(app_mode: Callable[..., Flask],
                                                         drift: FakeDrift) -> None:
    app = app_mode(DRIFT_API_URL="http://127.0.0.1:9", DRIFT_TIMEOUT_SECONDS=2.0)
    client = app.test_client()
    answer = client.get(authorise(client, drift, ORG_A))
    assert answer.status_code == 502
    assert "could not be reached" in answer.get_data(as_text=True)


def test_unexpected_error_on_an_install_page_is_a_page_not_a_trace(
        app_mode: Callable[..., Flask], drift: FakeDrift, monkeypatch: pytest.MonkeyPatch) -> None:
    app = app_mode()
    client = app.test_client()

    def database_down(*args: Any) -> None:
        raise RuntimeError("database is down")

    monkeypatch.setattr(app.extensions["routing"].directory, "save_tokens", database_down)
    answer = client.get(authorise(client, drift, ORG_A))
    page = answer.get_data(as_text=True)
    assert answer.status_code == 500 and answer.mimetype == "text/html"
    assert "Something went wrong" in page
    assert "database is down" not in page and "Traceback" not in page


def test_write_key_page_without_session_is_refused(app_mode: Callable[..., Flask]) -> None:
    client = app_mode().test_client()
    for answer in (client.get("/setup"),
                   client.post("/setup", data={"write_key": WRITE_KEY_A, "region": "us"})):
        assert answer.status_code == 403
        assert "setup session has ended" in answer.get_data(as_text=True)


def test_write_key_form_with_bad_csrf_token_is_refused(app_mode: Callable[..., Flask],
                                                       drift: FakeDrift) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    for token in ("", "forged-token", "ünïcode"):
        answer = client.post("/setup", data={"csrf_token": token, "write_key": WRITE_KEY_A,
                                             "region": "us"})
        assert answer.status_code == 403
        assert "form has expired" in answer.get_data(as_text=True)
    assert not app.extensions["routing"].directory.get(ORG_A).has_write_key


def test_malformed_write_key_is_refused_with_the_reason(app_mode: Callable[..., Flask],
                                                        drift: FakeDrift) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    token = csrf_token(client.get("/setup").get_data(as_text=True))
    for bad_key in ("short", "has spaces in it 0123456789abc", "x" * 65):
        answer = client.post("/setup", data={"csrf_token": token, "write_key": bad_key,
                                             "region": "us"})
        page = answer.get_data(as_text=True)
        assert answer.status_code == 422
        assert 'aria-invalid="true"' in page and "20 to 64" in page
        assert bad_key not in page
    answer = client.post("/setup", data={"csrf_token": token, "write_key": WRITE_KEY_A,
                                         "region": "mars"})
    assert answer.status_code == 422
    assert not app.extensions["routing"].directory.get(ORG_A).has_write_key


# -- routing and delivery -------------------------------------------------------------------


def test_webhook_for_an_org_that_never_installed_is_ignored(
        app_mode: Callable[..., Flask]) -> None:
    app = app_mode()
    answer = post_webhook(app, webhook_file("new_conversation", "seed_example", ORG_A))
    assert answer == {"status": "ignored", "reason": "org not installed"}
    assert app.extensions["store"].counts() == {}


def test_webhooks_wait_for_the_write_key_then_are_delivered(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    assert post_webhook(app, webhook_file("new_conversation", "seed_example", ORG_A))[
        "status"] == "accepted"
    assert app.extensions["store"].counts() == {("new_conversation", "held"): 1}
    assert deliver(app) == 0
    token = csrf_token(client.get("/setup").get_data(as_text=True))
    client.post("/setup", data={"csrf_token": token, "write_key": WRITE_KEY_A, "region": "us"})
    assert deliver(app) == 1
    assert events_by_write_key(segment) == {WRITE_KEY_A: [NEW_CONVERSATION]}


def test_each_org_reaches_only_its_own_write_key(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B)
    post_webhook(app, webhook_file("new_conversation", "seed_example", ORG_A))
    post_webhook(app, webhook_file("new_meeting", "seed_example", ORG_B))
    post_webhook(app, webhook_file("new_conversation", "missing_optional_fields", ORG_B))
    assert deliver(app) == 3
    assert events_by_write_key(segment) == {
        WRITE_KEY_A: [NEW_CONVERSATION],
        WRITE_KEY_B: ["Drift Source Event: new_meeting", NEW_CONVERSATION],
    }


def test_token_is_refreshed_before_it_expires(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    drift.expires_in = 120  # inside the refresh margin from the start
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    first_token = drift.issued[0]
    post_webhook(app, webhook_file("conversation_participant_added", "seed_example", ORG_A))
    assert deliver(app) == 1
    assert drift.grants == ["authorization_code", "refresh_token"]
    assert [token for _, token in drift.api_calls] == [drift.issued[2]] != [first_token]
    assert events_by_write_key(segment) == {WRITE_KEY_A: [PARTICIPANT_ADDED]}
    secrets = app.extensions["routing"].directory.secrets(ORG_A)
    assert (secrets.access_token, secrets.refresh_token) == (drift.issued[2], drift.issued[3])


def test_token_is_refreshed_once_on_a_401(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    drift.revoke_access(ORG_A)
    post_webhook(app, webhook_file("conversation_participant_added", "seed_example", ORG_A))
    assert deliver(app) == 1
    assert drift.grants == ["authorization_code", "refresh_token"]
    assert [token for _, token in drift.api_calls] == [drift.issued[0], drift.issued[2]]
    assert events_by_write_key(segment) == {WRITE_KEY_A: [PARTICIPANT_ADDED]}


def test_failed_refresh_marks_the_org_for_reinstall_and_others_still_deliver(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        service_log: Callable[[], str]) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B)
    drift.revoke_access(ORG_A)
    drift.refuse_refresh(ORG_A)
    post_webhook(app, webhook_file("conversation_participant_added", "seed_example", ORG_A))
    post_webhook(app, webhook_file("conversation_participant_added", "seed_example", ORG_B))
    assert deliver(app) == 2
    assert events_by_write_key(segment) == {WRITE_KEY_B: [PARTICIPANT_ADDED]}
    assert app.extensions["store"].counts() == {
        ("conversation_participant_added", "held"): 1,
        ("conversation_participant_added", "delivered"): 1,
    }
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["orgs"] == {
        "ok": True, "installed": 2, "awaiting_write_key": 0, "needs_reinstall": 1}
    warning = [json.loads(line) for line in service_log().splitlines()
               if "must re-install" in line]
    assert warning and warning[0]["org_id"] == ORG_A and warning[0]["level"] == "WARNING"
    # New webhooks wait too; re-installing the app releases them all.
    post_webhook(app, webhook_file("new_conversation", "seed_example", ORG_A))
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    assert deliver(app) == 2
    assert sorted(events_by_write_key(segment)[WRITE_KEY_A]) == [PARTICIPANT_ADDED,
                                                                  NEW_CONVERSATION]
    assert app.test_client().get("/readyz").get_json()["checks"]["orgs"]["needs_reinstall"] == 0


# -- secrets --------------------------------------------------------------------------------


def test_secrets_are_encrypted_in_the_database_and_absent_from_logs(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        database_url: str, service_log: Callable[[], str]) -> None:
    app = app_mode(LOG_LEVEL="DEBUG")
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    drift.revoke_access(ORG_A)  # a refresh stores (and may log about) more secrets
    post_webhook(app, webhook_file("conversation_participant_added", "seed_example", ORG_A))
    assert deliver(app) == 1
    secrets = [*drift.issued, WRITE_KEY_A, CLIENT_SECRET, SECRET_KEY]
    assert len(drift.issued) == 4
    with app.extensions["store"].engine.connect() as connection:
        stored = connection.execute(sqlalchemy.select(orgs)).one()
    for column in ("access_token", "refresh_token", "write_key"):
        assert stored._mapping[column]
        assert not any(secret.encode() in bytes(stored._mapping[column]) for secret in secrets)
    if database_url.startswith("sqlite:///"):
        app.extensions["store"].close()
        path = Path(database_url.removeprefix("sqlite:///"))
        on_disk = b"".join(file.read_bytes() for file in path.parent.glob(path.name + "*"))
        assert b"drift-at-" not in on_disk and b"drift-rt-" not in on_disk
        assert not any(secret.encode() in on_disk for secret in secrets)
    logged = service_log()
    assert "org authorised the app" in logged and "org saved its Segment write key" in logged
    assert not any(secret in logged for secret in secrets)


# -- operators ------------------------------------------------------------------------------


def test_orgs_cli_lists_shows_and_removes_without_printing_secrets(
        app_mode: Callable[..., Flask], drift: FakeDrift, database_url: str) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    install(app.test_client(), drift, ORG_B)
    env = {"DATABASE_URL": database_url, "DRIFT_CLIENT_ID": CLIENT_ID,
           "DRIFT_CLIENT_SECRET": CLIENT_SECRET, "SECRET_KEY": SECRET_KEY,
           "DRIFT_VERIFICATION_TOKEN": TOKEN, "SEGMENT_WRITE_KEY": "", "DRIFT_API_URL": drift.url}
    runner = CliRunner()
    listed = runner.invoke(main, ["orgs", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert str(ORG_A) in listed.output and "missing" in listed.output
    as_json = runner.invoke(main, ["orgs", "list", "--json"], env=env)
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(row["org_id"], row["write_key_set"]) for row in rows] == [(ORG_A, True),
                                                                       (ORG_B, False)]
    shown = runner.invoke(main, ["orgs", "show", str(ORG_A), "--json"], env=env)
    facts = json.loads(shown.output)
    assert facts["status"] == "active" and facts["access_token_set"] is True
    removed = runner.invoke(main, ["orgs", "remove", str(ORG_B), "--yes"], env=env)
    assert removed.exit_code == 0 and f"org {ORG_B} removed" in removed.output
    missing = runner.invoke(main, ["orgs", "show", str(ORG_B)], env=env)
    assert missing.exit_code != 0 and "has not installed" in missing.output
    everything = listed.output + as_json.output + shown.output + removed.output
    assert not any(secret in everything
                   for secret in [*drift.issued, WRITE_KEY_A, CLIENT_SECRET, SECRET_KEY])


def test_orgs_cli_outside_app_mode_says_so(database_url: str) -> None:
    answer = CliRunner().invoke(main, ["orgs", "list"], env={
        "DATABASE_URL": database_url, "DRIFT_CLIENT_ID": "", "DRIFT_CLIENT_SECRET": "",
        "DRIFT_VERIFICATION_TOKEN": TOKEN})
    assert answer.exit_code != 0 and "not in app mode" in answer.output
