"""Segment → Drift in app mode (docs/segment-to-drift.md#app-mode): each installed org has its
own endpoint ``/webhooks/segment/<orgId>`` and secret (made at install, encrypted at rest,
shown on its setup page), and its messages are written to Drift with that org's own OAuth
token."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.store.db import orgs

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.webhooks import headers, stringify
from .app_mode import ORG_A, ORG_B, app_mode_settings, install
from .conftest import AppFactory

TRACK = {"type": "track", "messageId": "t-1", "userId": "user-8841", "event": "Order Completed",
         "timestamp": "2024-04-29T19:40:00.123Z"}


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift("test-client-id", "test-client-secret-0123456789") as fake:
        yield fake


@pytest.fixture
def app(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment) -> Flask:
    return make_app(**app_mode_settings(drift, segment))


def secret_on_setup_page(app: Flask, drift: FakeDrift, org_id: int) -> tuple[str, str]:
    """Install ``org_id`` and read the Segment URL and secret its setup page shows."""
    client = app.test_client()
    install(client, drift, org_id)
    page = client.get("/setup").get_data(as_text=True)
    url = re.search(r'Webhook URL</dt>\s*<dd><code class="value" id="segment-url">([^<]+)</code>',
                    page)
    secret = re.search(r'Shared secret</dt>\s*<dd><code class="value" id="segment-secret">'
                       r"([^<]+)</code>", page)
    assert url and secret, page
    return url.group(1), secret.group(1)


def post(app: Flask, path: str, secret: str) -> tuple[int, dict[str, object]]:
    body = stringify(TRACK)
    answer = app.test_client().post(path, data=body, headers=headers(body, secret))
    return answer.status_code, answer.get_json()


def test_the_setup_page_shows_the_orgs_url_and_a_secret_stored_encrypted(
        app: Flask, drift: FakeDrift) -> None:
    url, secret = secret_on_setup_page(app, drift, ORG_A)
    assert url == f"http://localhost/webhooks/segment/{ORG_A}"
    assert len(secret) >= 40
    with app.extensions["store"].engine.connect() as connection:
        stored = connection.execute(sqlalchemy.select(orgs.c.segment_secret)).scalar()
    assert stored and secret.encode() not in bytes(stored)


def test_the_url_uses_public_url_when_it_is_set(make_app: AppFactory, drift: FakeDrift,
                                                segment: FakeSegment) -> None:
    app = make_app(**app_mode_settings(drift, segment, PUBLIC_URL="https://relay.example"))
    url, _ = secret_on_setup_page(app, drift, ORG_A)
    assert url == f"https://relay.example/webhooks/segment/{ORG_A}"


def test_a_message_signed_with_the_orgs_secret_is_stored_for_that_org(
        app: Flask, drift: FakeDrift) -> None:
    _, secret_a = secret_on_setup_page(app, drift, ORG_A)
    _, secret_b = secret_on_setup_page(app, drift, ORG_B)
    assert secret_a != secret_b
    assert post(app, f"/webhooks/segment/{ORG_A}", secret_b)[0] == 401
    status, answer = post(app, f"/webhooks/segment/{ORG_A}", secret_a)
    assert (status, answer["status"]) == (200, "accepted")
    with app.extensions["store"].engine.connect() as connection:
        stored = connection.execute(sqlalchemy.text(
            "SELECT org_id, event_type FROM webhooks")).all()
    assert [tuple(row) for row in stored] == [(ORG_A, "segment:track")]


def test_the_self_hosted_endpoint_is_off_in_app_mode(app: Flask, drift: FakeDrift) -> None:
    _, secret = secret_on_setup_page(app, drift, ORG_A)
    assert post(app, "/webhooks/segment", secret)[0] == 404


@pytest.mark.parametrize("path", ["/webhooks/segment/999",
                                  "/webhooks/segment/99999999999999999999"])
def test_an_org_without_a_secret_takes_no_signature(app: Flask, drift: FakeDrift,
                                                     path: str) -> None:
    # Answered as an installed org answers a wrong signature (test_org_endpoint_answers_alike).
    _, secret = secret_on_setup_page(app, drift, ORG_A)
    assert post(app, path, secret)[0] == 401


def test_reinstalling_keeps_the_secret(app: Flask, drift: FakeDrift) -> None:
    _, first = secret_on_setup_page(app, drift, ORG_A)
    _, again = secret_on_setup_page(app, drift, ORG_A)
    assert again == first


def test_delivery_writes_with_the_orgs_token_and_refreshes_it_on_a_401(
        app: Flask, drift: FakeDrift) -> None:
    _, secret = secret_on_setup_page(app, drift, ORG_A)
    valid_tokens: Callable[[str], bool] = lambda token: token in drift._access  # noqa: E731
    with FakeDrift(authorised=valid_tokens) as contacts:
        contacts.add_contact({"id": 21760538950, "createdAt": 0,
                              "attributes": {"externalId": "user-8841"}})
        assert post(app, f"/webhooks/segment/{ORG_A}", secret)[1]["status"] == "accepted"
        drift.revoke_access(ORG_A)
        delivery = make_delivery(app)
        # The contacts API answers at its own address; OAuth stays at the fake Drift.
        delivery.lookups.drift_api.base_url = contacts.url
        delivery.run_round()
        assert app.extensions["store"].counts() == {("segment:track", "delivered"): 1}
        assert [call["status"] for call in contacts.calls] == [401, 200]
        assert drift.grants[-1] == "refresh_token"
        assert len(contacts.timeline) == 1

