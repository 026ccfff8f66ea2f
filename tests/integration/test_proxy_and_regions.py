"""App mode behind Heroku's router, and each org's Segment region sent to the operator's host.

Behind a proxy that ends TLS, the redirect URL sent to Drift and the session cookie must say
https; the proxy's X-Forwarded-* headers are believed from ``TRUSTED_PROXIES`` proxies only.
An org stores its region; ``SEGMENT_HOST`` (US) and ``SEGMENT_EU_HOST`` (EU) say where its
messages go, so an operator can put a proxy or a compatible collector in front of every org.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy
from flask import Flask

from drift_segment_source import config
from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.breakers import PROBE_SECONDS
from drift_segment_source.destinations.segment import SegmentError
from drift_segment_source.store.db import orgs

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .app_mode import (
    ORG_A,
    ORG_B,
    WRITE_KEY_A,
    WRITE_KEY_B,
    events_by_write_key,
    install,
    webhook_file,
)
from .conftest import AppFactory

NEW_CONVERSATION = "Drift Source Event: new_conversation"
ROUTER_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "relay.example.com",
                  "X-Forwarded-Port": "443", "X-Forwarded-For": "203.0.113.9"}




def redirect_uri(location: str) -> str:
    """The redirect_uri this service asked Drift to send the browser back to."""
    return parse_qs(urlsplit(location).query)["redirect_uri"][0]


def deliver(app: Flask) -> int:
    return make_delivery(app).run_round()


# -- behind a proxy ---------------------------------------------------------------------------


def test_behind_the_router_the_redirect_url_is_https_and_the_cookie_secure(
        app_mode: Callable[..., Flask]) -> None:
    app = app_mode()  # TRUSTED_PROXIES defaults to 1: Heroku's router
    answer = app.test_client().get("/oauth/install", headers=ROUTER_HEADERS)
    assert redirect_uri(answer.headers["Location"]) == "https://relay.example.com/oauth/callback"
    assert "Secure" in answer.headers["Set-Cookie"]


def test_forwarded_headers_are_ignored_when_no_proxy_is_trusted(
        app_mode: Callable[..., Flask]) -> None:
    answer = app_mode(TRUSTED_PROXIES=0).test_client().get("/oauth/install",
                                                           headers=ROUTER_HEADERS)
    assert redirect_uri(answer.headers["Location"]) == "http://localhost/oauth/callback"
    assert "Secure" not in answer.headers["Set-Cookie"]


def test_only_the_trusted_proxies_own_entries_are_believed(
        app_mode: Callable[..., Flask]) -> None:
    # A client's own X-Forwarded-* come first; the one proxy appends what it saw.
    answer = app_mode().test_client().get("/oauth/install", headers={
        "X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "evil.example, relay.example.com"})
    assert redirect_uri(answer.headers["Location"]) == "http://relay.example.com/oauth/callback"
    assert "Secure" not in answer.headers["Set-Cookie"]


def test_public_url_wins_over_forwarded_headers(app_mode: Callable[..., Flask]) -> None:
    answer = app_mode(PUBLIC_URL="https://drift-segment.example.com").test_client().get(
        "/oauth/install", headers={**ROUTER_HEADERS, "X-Forwarded-Host": "evil.example"})
    assert redirect_uri(answer.headers["Location"]) == (
        "https://drift-segment.example.com/oauth/callback")


@pytest.mark.parametrize("public_url", ["http://relay.example.com", "http://10.0.0.8:8000",
                                        "ftp://relay.example.com", "relay.example.com"])
def test_app_mode_refuses_to_start_with_a_public_url_that_is_not_https(
        app_mode: Callable[..., Flask], public_url: str) -> None:
    with pytest.raises(config.ConfigError, match="PUBLIC_URL must be an https URL"):
        app_mode(PUBLIC_URL=public_url)


@pytest.mark.parametrize("public_url", ["http://localhost:8000", "http://127.0.0.1:5000/",
                                        "http://[::1]:8000", "https://relay.example.com"])
def test_app_mode_starts_with_https_or_a_local_http_public_url(
        app_mode: Callable[..., Flask], public_url: str) -> None:
    assert app_mode(PUBLIC_URL=public_url).config["PUBLIC_URL"] == public_url


def test_self_hosted_mode_does_not_use_public_url(make_app: AppFactory) -> None:
    assert make_app(PUBLIC_URL="http://relay.example.com")


def test_a_negative_number_of_proxies_is_refused(make_app: AppFactory) -> None:
    with pytest.raises(config.ConfigError, match="TRUSTED_PROXIES"):
        make_app(TRUSTED_PROXIES=-1)


# -- regions ----------------------------------------------------------------------------------


@pytest.fixture
def eu_segment() -> Iterator[FakeSegment]:
    with FakeSegment() as fake:
        yield fake


def regional(app_mode: Callable[..., Flask], us: FakeSegment, eu: FakeSegment,
             **overrides: Any) -> Flask:
    """An app-mode app whose regions go where the operator's settings say."""
    return app_mode(SEGMENT_HOST=us.url, SEGMENT_EU_HOST=eu.url, **overrides)


def test_each_org_is_delivered_to_the_host_configured_for_its_region(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    app = regional(app_mode, segment, eu_segment)
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A, region="us")
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B, region="eu")
    for org_id in (ORG_A, ORG_B):
        answer = app.test_client().post(
            "/webhooks/drift", json=webhook_file("new_conversation", "seed_example", org_id))
        assert answer.get_json()["status"] == "accepted"
    assert deliver(app) == 2
    assert events_by_write_key(segment) == {WRITE_KEY_A: [NEW_CONVERSATION]}
    assert events_by_write_key(eu_segment) == {WRITE_KEY_B: [NEW_CONVERSATION]}


class HangingHost:
    """A transport whose posts to one host hang until released; others are recorded."""

    def __init__(self, hung_host: str) -> None:
        self.hung_host = hung_host
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.posted_elsewhere = threading.Event()
        self.posts: list[tuple[str, str]] = []
        self.armed = False  # the write-key checks at install are answered
        self.in_flight = 0  # posts hanging now

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        self.posts.append((write_key, host))
        if host == self.hung_host and self.armed:
            self.in_flight += 1
            self.hanging.set()
            self.release.wait(30)
            self.in_flight -= 1
            raise SegmentError(None, "ReadTimeout", timed_out=True)
        self.posted_elsewhere.set()


def test_a_host_that_hangs_holds_up_no_other_orgs_post(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    """App mode: one org's Segment host not answering must not make every other org wait
    for its timeout (three in a row before its circuit opens)."""
    transport = HangingHost(eu_segment.url)
    app = regional(app_mode, segment, eu_segment, TRANSPORT=transport)
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B, region="eu")
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A, region="us")
    for org_id in (ORG_B, ORG_A):  # the hung org's row first
        app.test_client().post("/webhooks/drift",
                               json=webhook_file("new_conversation", "seed_example", org_id))
    delivery = make_delivery(app)
    transport.armed = True
    round_thread = threading.Thread(target=delivery.run_round)
    round_thread.start()
    try:
        assert transport.hanging.wait(10)
        # Posted while the other host's post still hangs, not after it gives up.
        assert transport.posted_elsewhere.wait(10), transport.posts
        assert round_thread.is_alive()
    finally:
        transport.release.set()
        round_thread.join(30)
    assert (WRITE_KEY_A, segment.url) in transport.posts
    assert org_states(app) == {ORG_A: ["delivered"], ORG_B: ["pending"]}
    assert len(app.extensions["store"].open_breakers()) == 1
    # The first timeout opened org B's circuit. Its next probe hangs too, but beside the
    # round: the round ends, and org A's new webhook is delivered, while it hangs.
    transport.release.clear()
    transport.hanging.clear()
    transport.posted_elsewhere.clear()
    time.sleep(PROBE_SECONDS + 0.2)
    for org_id in (ORG_B, ORG_A):
        later = webhook_file("new_conversation", "seed_example", org_id)
        later["data"]["id"] += 1
        app.test_client().post("/webhooks/drift", json=later)
    try:
        assert delivery.run_round() == 3
        assert transport.hanging.wait(10), "the probe was made"
        assert transport.in_flight == 1, "the round ended while the probe still hangs"
        assert transport.posted_elsewhere.is_set()
        assert org_states(app)[ORG_A] == ["delivered", "delivered"]
    finally:
        transport.release.set()
        delivery.drain(30)
    assert org_states(app)[ORG_B] == ["pending", "pending"]  # the probe failed: retried


def org_states(app: Flask) -> dict[int, list[str]]:
    with app.extensions["store"].engine.connect() as connection:
        found: dict[int, list[str]] = {}
        for org_id, state in connection.exec_driver_sql(
                "SELECT org_id, state FROM webhooks ORDER BY id"):
            found.setdefault(org_id, []).append(state)
        return found


def test_an_orgs_region_follows_the_operators_setting_when_it_changes(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    before = regional(app_mode, segment, segment)
    install(before.test_client(), drift, ORG_B, WRITE_KEY_B, region="eu")
    # The operator puts a collector in front of the EU region: the org need not re-install.
    after = regional(app_mode, segment, eu_segment)
    after.test_client().post("/webhooks/drift",
                             json=webhook_file("new_conversation", "seed_example", ORG_B))
    assert deliver(after) == 1
    assert (segment.messages, events_by_write_key(eu_segment)) == (
        [], {WRITE_KEY_B: [NEW_CONVERSATION]})
    org = after.extensions["routing"].directory.get(ORG_B)
    assert (org.segment_region, org.segment_host) == ("eu", eu_segment.url)


@pytest.mark.parametrize("stored, region, expected", [
    ("https://api.segment.io", "us", "us"),
    ("https://events.eu1.segmentapis.com", "eu", "eu"),
    ("https://collector.example.com", None, "https://collector.example.com"),
])
def test_hosts_stored_before_regions_were_settings_still_route(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment, stored: str, region: str | None, expected: str) -> None:
    app = regional(app_mode, segment, eu_segment)
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    with app.extensions["store"].engine.begin() as connection:
        connection.execute(sqlalchemy.update(orgs).where(orgs.c.org_id == ORG_A)
                           .values(segment_host=stored))
    directory = app.extensions["routing"].directory
    directory.changed(ORG_A)
    host = {"us": segment.url, "eu": eu_segment.url}.get(expected, expected)
    assert directory.get(ORG_A).segment_region == region
    assert app.extensions["routing"].destination(ORG_A).host == host


def test_the_setup_page_shows_segments_hosts_and_the_orgs_saved_region(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    app = regional(app_mode, segment, eu_segment)
    client = app.test_client()
    install(client, drift, ORG_A, WRITE_KEY_A, region="eu")
    install(client, drift, ORG_A)  # re-install: the form opens on the saved region
    page = client.get("/setup").get_data(as_text=True)
    assert "https://events.eu1.segmentapis.com" in page and "https://api.segment.io" in page
    assert segment.url not in page and eu_segment.url not in page
    checked = page.split('id="region-eu"', 1)[1].split(">", 1)[0]
    assert "checked" in checked


def test_saved_region_is_stored_as_segments_host_for_it(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    app = regional(app_mode, segment, eu_segment)
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A, region="eu")
    with app.extensions["store"].engine.connect() as connection:
        stored = connection.execute(sqlalchemy.select(orgs.c.segment_host)).scalar_one()
    # Readable by the release before this one too: a rollback keeps delivering.
    assert stored == "https://events.eu1.segmentapis.com"
