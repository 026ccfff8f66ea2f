"""App mode: ``/webhooks/segment/<orgId>`` answers a request that is not authentic the same
way whether the org installed the app or not, so nobody can list which Drift orgs use this
deployment by probing ids. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.webhooks import headers, stringify
from .app_mode import ORG_A, ORG_B, app_mode_settings, install
from .conftest import AppFactory

TRACK = {"type": "track", "messageId": "t-1", "userId": "user-8841", "event": "Order Completed",
         "timestamp": "2024-04-29T19:40:00.123Z"}
NEVER_INSTALLED = 999
INSTALLED_THEN_REMOVED = ORG_B


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift("test-client-id", "test-client-secret-0123456789") as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment) -> Flask:
    app = make_app(**app_mode_settings(drift, segment))
    install(app.test_client(), drift, ORG_A)
    install(app.test_client(), drift, INSTALLED_THEN_REMOVED)
    assert app.extensions["routing"].directory.remove(INSTALLED_THEN_REMOVED)
    return app


def secret_of(app: Flask, drift: FakeDrift, org_id: int) -> str:
    client = app.test_client()
    install(client, drift, org_id)
    page = client.get("/setup").get_data(as_text=True)
    found = re.search(r'id="segment-secret">([^<]+)</code>', page)
    assert found, page
    return found.group(1)


def answer(app: Flask, org_id: int | str, **request: Any) -> tuple[int, bytes]:
    reply = app.test_client().post(f"/webhooks/segment/{org_id}", **request)
    return reply.status_code, reply.get_data()


def not_authentic() -> dict[str, dict[str, Any]]:
    body = stringify(TRACK)
    return {
        "wrong signature": {"data": body, "headers": headers(body, "not-the-secret")},
        "no signature": {"data": body, "headers": {"Content-Type": "application/json"}},
        "signed, not JSON": {"data": b"{not json",
                             "headers": headers(b"{not json", "not-the-secret")},
        "empty": {"data": b"", "headers": {"Content-Type": "application/json"}},
        "not JSON media type": {"data": body, "headers": {"Content-Type": "text/plain"}},
    }


@pytest.mark.parametrize("case", sorted(not_authentic()))
def test_unknown_and_installed_orgs_answer_alike(app: Flask, case: str) -> None:
    request = not_authentic()[case]
    installed = answer(app, ORG_A, **request)
    assert installed[0] in (400, 401)
    for other in (NEVER_INSTALLED, INSTALLED_THEN_REMOVED, 2**63, 10**30):
        assert answer(app, other, **request) == installed, other


def test_an_authentic_request_still_reaches_its_org(app: Flask, drift: FakeDrift) -> None:
    secret = secret_of(app, drift, ORG_A)
    body = stringify(TRACK)
    status, reply = answer(app, ORG_A, data=body, headers=headers(body, secret))
    assert status == 200 and b'"accepted"' in reply
    # The same signed request sent to an org that never installed is not authentic there.
    assert answer(app, NEVER_INSTALLED, data=body, headers=headers(body, secret))[0] == 401
