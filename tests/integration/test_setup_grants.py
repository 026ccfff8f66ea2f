"""App mode: the grant that opens an org's setup page is kept server-side and used once.

The browser's cookie carries only a random token (the store keeps its SHA-256). No copy of the
cookie opens the setup page (with the org's Segment → Drift secret) or changes the write key
after the key was saved, after the org installed again, or after the grant's time
(docs: README, "What an org admin sees"). Drift and Segment are loopback fakes; every test
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import zlib
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from flask.testing import FlaskClient

from drift_segment_source.app import make_delivery
from drift_segment_source.app_mode.grants import GRANT_SECONDS
from drift_segment_source.store.db import setup_grants

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .app_mode import (
    ORG_A,
    ORG_B,
    WRITE_KEY_A,
    WRITE_KEY_B,
    app_mode_settings,
    csrf_token,
    events_by_write_key,
    install,
    webhook_file,
)
from .conftest import AppFactory

COOKIE = "dss_session"
COPIER_KEY = "CCCCcopiedCookieKey0123456789abc"
NEW_CONVERSATION = "Drift Source Event: new_conversation"


class SteppedClock:
    """A wall clock the test sets and steps by hand."""

    def __init__(self, start: float = 1_714_420_800.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now



@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def app(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment,
        clock: SteppedClock) -> Flask:
    return make_app(**app_mode_settings(drift, segment, CLOCK=clock))


def authorised(app: Flask, drift: FakeDrift, org_id: int = ORG_A) -> FlaskClient:
    """A browser that just authorised the app for ``org_id`` (at /setup, no key saved)."""
    client = app.test_client()
    install(client, drift, org_id)
    return client


def copy_of(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    copy = app.test_client()
    copy.set_cookie(COOKIE, cookie.value, domain=cookie.domain)
    return copy


def save(client: FlaskClient, write_key: str, token: str | None = None) -> Any:
    """Post the write-key form as the page gave it to ``client``."""
    if token is None:
        token = csrf_token(client.get("/setup").get_data(as_text=True))
    return client.post("/setup", data={"csrf_token": token, "write_key": write_key,
                                       "region": "us"})


def session_of(client: FlaskClient) -> dict[str, Any]:
    """What the browser's session cookie says (signed, not encrypted: anyone can read it)."""
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    payload = cookie.value.split(".")[1 if cookie.value.startswith(".") else 0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.value.startswith("."):
        raw = zlib.decompress(raw)
    found: dict[str, Any] = json.loads(raw)
    return found


def grants_of(app: Flask) -> list[tuple[bytes, int]]:
    with app.extensions["store"].engine.connect() as connection:
        rows = connection.execute(sqlalchemy.select(setup_grants.c.digest,
                                                    setup_grants.c.org_id)).all()
    return [(bytes(digest), int(org_id)) for digest, org_id in rows]


def is_refused(answer: Any) -> bool:
    return answer.status_code == 403 and "setup session has ended" in answer.get_data(
        as_text=True)


# -- what the cookie and the store hold ---------------------------------------------------------


def test_the_cookie_holds_a_random_token_whose_digest_is_the_stored_grant(
        app: Flask, drift: FakeDrift) -> None:
    client = authorised(app, drift)
    session = session_of(client)
    assert "org_id" not in session and str(ORG_A) not in json.dumps(session)
    token = session["setup_grant"]
    assert len(token) >= 40
    assert grants_of(app) == [(hashlib.sha256(token.encode()).digest(), ORG_A)]


# -- used once ----------------------------------------------------------------------------------


def test_a_cookie_copied_before_the_save_opens_nothing_after_it(
        app: Flask, drift: FakeDrift, segment: FakeSegment) -> None:
    admin = authorised(app, drift)
    copy = copy_of(app, admin)
    stale_form_token = csrf_token(copy.get("/setup").get_data(as_text=True))
    assert save(admin, WRITE_KEY_A).status_code == 303

    assert is_refused(copy.get("/setup"))
    assert is_refused(save(copy, COPIER_KEY, stale_form_token))
    assert grants_of(app) == []
    app.test_client().post("/webhooks/drift",
                           json=webhook_file("new_conversation", "seed_example", ORG_A))
    make_delivery(app).run_round()
    assert events_by_write_key(segment) == {WRITE_KEY_A: [NEW_CONVERSATION]}


def test_the_same_browser_cannot_save_twice(app: Flask, drift: FakeDrift) -> None:
    admin = authorised(app, drift)
    form_token = csrf_token(admin.get("/setup").get_data(as_text=True))
    cookie = admin.get_cookie(COOKIE)
    assert cookie is not None
    assert save(admin, WRITE_KEY_A, form_token).status_code == 303
    # Even with the cookie put back as it was before the save (session.clear() only
    # clears the browser's copy).
    admin.set_cookie(COOKIE, cookie.value, domain=cookie.domain)
    assert is_refused(save(admin, WRITE_KEY_B, form_token))
    assert app.extensions["routing"].directory.secrets(ORG_A).write_key == WRITE_KEY_A


def test_a_form_error_does_not_use_the_grant(app: Flask, drift: FakeDrift,
                                             segment: FakeSegment) -> None:
    admin = authorised(app, drift)
    assert save(admin, "short").status_code == 422
    segment.refuse_write_key(WRITE_KEY_B)
    assert save(admin, WRITE_KEY_B).status_code == 422
    assert save(admin, WRITE_KEY_A).status_code == 303


def test_a_copy_used_at_the_same_time_as_the_save_saves_at_most_one_key(
        app: Flask, drift: FakeDrift, segment: FakeSegment) -> None:
    admin = authorised(app, drift)
    copy = copy_of(app, admin)
    form_token = csrf_token(admin.get("/setup").get_data(as_text=True))
    # Both posts wait in the write-key check together, then race to save.
    segment.delay = 0.5
    answers: dict[str, Any] = {}

    def post(name: str, client: FlaskClient, key: str) -> None:
        answers[name] = save(client, key, form_token)

    threads = [threading.Thread(target=post, args=("admin", admin, WRITE_KEY_A)),
               threading.Thread(target=post, args=("copy", copy, COPIER_KEY))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses == [303, 403]
    winner = WRITE_KEY_A if answers["admin"].status_code == 303 else COPIER_KEY
    assert app.extensions["routing"].directory.secrets(ORG_A).write_key == winner
    assert sorted(segment.checks) == sorted([WRITE_KEY_A, COPIER_KEY])


# -- revoked by a re-install --------------------------------------------------------------------


def test_installing_again_revokes_every_earlier_grant_of_the_org(
        app: Flask, drift: FakeDrift) -> None:
    first = authorised(app, drift)
    copy = copy_of(app, first)
    other_org = authorised(app, drift, ORG_B)
    again = authorised(app, drift)

    assert is_refused(first.get("/setup")) and is_refused(copy.get("/setup"))
    assert is_refused(save(copy, COPIER_KEY, csrf_token(
        again.get("/setup").get_data(as_text=True))))
    assert other_org.get("/setup").status_code == 200  # another org's grant is its own
    assert sorted(org for _, org in grants_of(app)) == [ORG_A, ORG_B]
    assert save(again, WRITE_KEY_A).status_code == 303


def test_a_copy_taken_before_a_reinstall_cannot_change_the_saved_key(
        app: Flask, drift: FakeDrift) -> None:
    first = authorised(app, drift)
    copy = copy_of(app, first)
    form_token = csrf_token(copy.get("/setup").get_data(as_text=True))
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    assert is_refused(save(copy, COPIER_KEY, form_token))
    assert app.extensions["routing"].directory.secrets(ORG_A).write_key == WRITE_KEY_A


def test_removing_the_org_revokes_its_grants(app: Flask, drift: FakeDrift) -> None:
    admin = authorised(app, drift)
    assert app.extensions["routing"].directory.remove(ORG_A)
    assert grants_of(app) == []
    assert is_refused(admin.get("/setup"))


# -- expiry (wall clock) ------------------------------------------------------------------------


def test_a_grant_opens_the_page_until_its_time_then_never(
        app: Flask, drift: FakeDrift, clock: SteppedClock) -> None:
    admin = authorised(app, drift)
    copy = copy_of(app, admin)
    form_token = csrf_token(admin.get("/setup").get_data(as_text=True))
    clock.now += GRANT_SECONDS - 1
    assert admin.get("/setup").status_code == 200
    clock.now += 2
    assert is_refused(admin.get("/setup"))
    assert is_refused(save(copy, COPIER_KEY, form_token))
    assert not app.extensions["routing"].directory.get(ORG_A).has_write_key


def test_an_expired_grant_stays_expired_when_the_clock_steps_back(
        app: Flask, drift: FakeDrift, clock: SteppedClock) -> None:
    admin = authorised(app, drift)
    copy = copy_of(app, admin)
    clock.now += GRANT_SECONDS + 60
    assert is_refused(copy.get("/setup"))  # seen expired: deleted
    clock.now -= 2 * 60 + GRANT_SECONDS // 2  # back inside the grant's window
    assert is_refused(copy.get("/setup")) and is_refused(admin.get("/setup"))


def test_expired_grants_are_deleted_when_any_grant_is_made(
        app: Flask, drift: FakeDrift, clock: SteppedClock) -> None:
    authorised(app, drift)
    clock.now += GRANT_SECONDS + 1
    authorised(app, drift, ORG_B)
    assert [org for _, org in grants_of(app)] == [ORG_B]


def test_a_grant_made_after_the_clock_now_says_is_refused(
        app: Flask, drift: FakeDrift, clock: SteppedClock) -> None:
    # The clock stepped back past the grant's creation: its age cannot be told, so it is
    # refused (installing again makes a fresh one).
    admin = authorised(app, drift)
    clock.now -= 3600
    assert is_refused(admin.get("/setup"))
    again = authorised(app, drift)
    assert again.get("/setup").status_code == 200


def test_installs_at_the_same_moment_leave_one_grant(app: Flask, drift: FakeDrift) -> None:
    install(app.test_client(), drift, ORG_A)  # the org's row exists, as after any callback
    grants = app.extensions["routing"].grants
    for _ in range(3):
        start = threading.Barrier(6)

        def issue(start: threading.Barrier = start) -> None:
            start.wait(timeout=30)
            grants.issue(ORG_A)

        threads = [threading.Thread(target=issue) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [org for _, org in grants_of(app)] == [ORG_A]
