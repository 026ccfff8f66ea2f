"""App mode (many Drift orgs, each installed through the real OAuth and write-key pages):
one org's trouble stays its own. A garbled token answer is retried, concurrent lookups renew
an org's token once, a hung Segment region barely delays the other region's orgs, and a
post made beside the round ends inside its rows' lease (see docs/app-mode.md)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import Service, wait_for
from ..support.webhooks import new_conversation, post, webhook
from .conftest import StartService, dead_reasons, service_env, states, status

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-0123456789"
SECRET_KEY = "test-secret-key-for-app-mode-0123456789"
LEASE = 7.5
SEGMENT_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def oauth_drift() -> Iterator[FakeDrift]:
    """Drift's OAuth and API for every org of the module."""
    with FakeDrift(CLIENT_ID, CLIENT_SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
def eu_segment() -> Iterator[FakeSegment]:
    """Segment's EU region (the module's US region is ``module_segment``)."""
    with FakeSegment() as fake:
        yield fake


@pytest.fixture(scope="module")
def service(start_module_service: StartService, module_folder: Path, oauth_drift: FakeDrift,
            module_segment: FakeSegment, eu_segment: FakeSegment) -> Iterator[Service]:
    """One app-mode service (SQLite) for the module; short lease and Segment timeout."""
    env = service_env(f"sqlite:///{module_folder / 'store.sqlite3'}",
                      DRIFT_CLIENT_ID=CLIENT_ID, DRIFT_CLIENT_SECRET=CLIENT_SECRET,
                      SECRET_KEY=SECRET_KEY, DRIFT_API_URL=oauth_drift.url,
                      DRIFT_AUTHORIZE_URL=oauth_drift.authorize_url,
                      DRIFT_SETTINGS_URL=oauth_drift.settings_url,
                      SEGMENT_HOST=module_segment.url, SEGMENT_EU_HOST=eu_segment.url,
                      SEGMENT_TIMEOUT_SECONDS=SEGMENT_TIMEOUT, DELIVERY_LEASE_SECONDS=LEASE,
                      DELIVERY_LOOKUP_WAIT_SECONDS=2)
    yield start_module_service(env)


def install(service: Service, drift: FakeDrift, org_id: int, region: str = "us") -> str:
    """Install the app for ``org_id`` as its admin would (OAuth, then the write-key form);
    the org's write key."""
    write_key = f"{org_id:0>8}writeKey0123456789abcdef"
    browser = requests.Session()
    started = browser.get(service.url + "/oauth/install", allow_redirects=False, timeout=10)
    assert started.status_code == 302, started.text
    callback = urlsplit(drift.approve(started.headers["Location"], org_id))
    back = browser.get(f"{service.url}{callback.path}?{callback.query}",
                       allow_redirects=False, timeout=10)
    assert back.status_code == 303, back.text
    form = browser.get(service.url + "/setup", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, form
    saved = browser.post(service.url + "/setup", allow_redirects=False, timeout=10, data={
        "csrf_token": token.group(1), "write_key": write_key, "region": region})
    assert saved.status_code == 303, saved.text
    return write_key


def open_circuits(service: Service) -> set[str]:
    """The destinations whose circuit is open."""
    return {circuit["destination"] for circuit in status(service)["open_circuits"]}


def participant(conversation: int, org_id: int) -> dict[str, Any]:
    """A participant event whose contact comes from its conversation (a lookup)."""
    return webhook("conversation_participant_added", {
        "conversationId": conversation, "addedParticipants": [1],
        "changedAt": 1714419400000 + conversation}, org_id)


def test_a_garbled_token_answer_is_retried_not_dead_lettered(
        service: Service, oauth_drift: FakeDrift, module_segment: FakeSegment) -> None:
    # The org's token is about to expire, so its lookup renews it first; the token
    # endpoint answers 200 with JSON nested 5,000 deep (a broken proxy), then recovers.
    org = 7_100_001
    oauth_drift.expires_in = 60
    install(service, oauth_drift, org)
    oauth_drift.conversations["71"] = {"id": 71, "contactId": 47_100_000_071}
    oauth_drift.raw["POST /oauth2/token"] = (200, b"[" * 5000 + b"]" * 5000, {})
    renewals = len(oauth_drift.paths("/oauth2/token"))
    answer = post(service.url, participant(71, org))
    assert answer.label == "200 accepted"
    assert wait_for(lambda: len(oauth_drift.paths("/oauth2/token")) > renewals, 10)
    time.sleep(1.0)
    assert answer.body["id"] not in dead_reasons(service)
    del oauth_drift.raw["POST /oauth2/token"]
    assert wait_for(lambda: "47100000071" in module_segment.by_anonymous_id(), 30), \
        status(service)["retrying"]


def test_concurrent_lookups_renew_an_org_token_once(
        service: Service, oauth_drift: FakeDrift, module_segment: FakeSegment) -> None:
    # Five lookups at once, each finding the token about to expire; Drift's refresh tokens
    # are single-use and its token endpoint takes 0.3 s. The org must never need a
    # re-install: all its events (and a later one that needs no lookup) are delivered.
    org = 7_200_001
    oauth_drift.expires_in = 60
    install(service, oauth_drift, org)
    oauth_drift.slow_calls["POST /oauth2/token"] = [0.3] * 20
    for conversation in range(1, 6):
        oauth_drift.conversations[str(conversation)] = {
            "id": conversation, "contactId": 47_200_000_000 + conversation}
        assert post(service.url, participant(conversation, org)).label == "200 accepted"
    assert post(service.url, new_conversation(47_200_000_999, org_id=org)).label == \
        "200 accepted"
    wanted = {str(47_200_000_000 + n) for n in (1, 2, 3, 4, 5, 999)}
    assert wait_for(lambda: wanted <= set(module_segment.by_anonymous_id()), 15), \
        status(service)["backlog"]
    oauth_drift.slow_calls.clear()


def test_a_hung_segment_region_barely_delays_the_other_regions_orgs(
        service: Service, oauth_drift: FakeDrift, module_segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    # Org A's region stops answering (each post waits out SEGMENT_TIMEOUT_SECONDS) while
    # both orgs send a webhook every 0.4 s: org B's flow goes on.
    oauth_drift.expires_in = 7200
    org_a, org_b = 7_300_001, 7_300_002
    install(service, oauth_drift, org_a, "eu")
    install(service, oauth_drift, org_b, "us")
    eu_segment.delay = 30.0
    posted_at: dict[str, float] = {}
    for n in range(10):
        post(service.url, new_conversation(50_000_000 + n, org_id=org_a))
        contact = 51_000_000 + n
        posted_at[str(contact)] = time.time()
        assert post(service.url, new_conversation(contact, org_id=org_b)).label == \
            "200 accepted"
        time.sleep(0.4)
    assert wait_for(lambda: set(posted_at) <= set(module_segment.by_anonymous_id()), 10)
    seen = module_segment.first_seen()
    waits = sorted(seen[contact] - at for contact, at in posted_at.items())
    # One timeout when the host starts hanging, at most; most go out at once.
    assert statistics.median(waits) < 1.0, waits
    assert waits[-1] < SEGMENT_TIMEOUT + 2.5, waits
    assert states(service).get("dead", 0) == 0
    eu_segment.delay = 0.0


def test_a_post_beside_the_round_ends_inside_its_rows_lease(
        service: Service, oauth_drift: FakeDrift, module_segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    # Org C's region fails until its circuit opens; then its probe's answer trickles for
    # 2 s and the next post's (C's other rows, posted beside the round) for 7 s, about the
    # lease: the post ends within the lease, the rows are posted again only under the same
    # messageIds, and all are delivered while org D's rows keep going out.
    oauth_drift.expires_in = 7200
    org_c, org_d = 7_400_001, 7_400_002
    install(service, oauth_drift, org_c, "eu")
    install(service, oauth_drift, org_d, "us")
    others = open_circuits(service)  # an earlier test's org may still be probed
    eu_segment.fail_always(503)
    c_rows = {str(60_000_000 + n) for n in range(4)}
    for contact in c_rows:
        assert post(service.url, new_conversation(int(contact), org_id=org_c)).label == \
            "200 accepted"

    def c_circuit_open() -> bool:
        return bool(open_circuits(service) - others)

    assert wait_for(c_circuit_open, 15, step=0.2), status(service)
    eu_segment.trickle_each(2.0, 7.0)
    eu_segment.recover()
    d_rows = set()
    until = time.monotonic() + 14
    while time.monotonic() < until and not c_rows <= set(eu_segment.by_anonymous_id()):
        contact = 61_000_000 + len(d_rows)
        post(service.url, new_conversation(contact, org_id=org_d))
        d_rows.add(str(contact))
        time.sleep(0.3)
    assert wait_for(lambda: c_rows <= set(eu_segment.by_anonymous_id()), 10)
    assert wait_for(lambda: d_rows <= set(module_segment.by_anonymous_id()), 10)
    c_ids = {message["messageId"] for contact in c_rows
             for message in eu_segment.by_anonymous_id()[contact]}
    assert len(c_ids) == 4
    assert wait_for(lambda: not c_circuit_open(), 10)
