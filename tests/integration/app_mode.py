"""What the app-mode tests share: settings pointing at the fakes, installing an org through
the real endpoints, webhooks made from the fixture files, reading what Segment got."""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.paths import FIXTURES

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-0123456789"
SECRET_KEY = "test-secret-key-for-app-mode-0123456789"
WRITE_KEY_A = "AAAAwriteKeyOrgA0123456789abcdef"
WRITE_KEY_B = "BBBBwriteKeyOrgB0123456789abcdef"
ORG_A = 5000883
ORG_B = 7100042


def app_mode_settings(drift: FakeDrift, segment: FakeSegment, **overrides: Any) -> dict[str, Any]:
    """Settings for app mode against the fakes (no self-hosted write key or Drift token)."""
    settings: dict[str, Any] = {
        "DRIFT_CLIENT_ID": CLIENT_ID,
        "DRIFT_CLIENT_SECRET": CLIENT_SECRET,
        "SECRET_KEY": SECRET_KEY,
        "DRIFT_API_URL": drift.url,
        "DRIFT_AUTHORIZE_URL": drift.authorize_url,
        "DRIFT_SETTINGS_URL": drift.settings_url,
        "SEGMENT_WRITE_KEY": None,
        "DRIFT_ACCESS_TOKEN": None,
        "SEGMENT_HOST": segment.url,  # both regions at one fake
        "SEGMENT_EU_HOST": segment.url,
    }
    settings.update(overrides)
    return settings


def authorise(client: FlaskClient, drift: FakeDrift, org_id: int) -> str:
    """Start the install and authorise at Drift as ``org_id``; the callback path and query."""
    started = client.get("/oauth/install")
    assert started.status_code == 302
    callback = urlsplit(drift.approve(started.headers["Location"], org_id))
    return f"{callback.path}?{callback.query}"


def csrf_token(page: str) -> str:
    """The CSRF token of the write-key form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the write-key form has no CSRF token"
    return found.group(1)


def install(client: FlaskClient, drift: FakeDrift, org_id: int, write_key: str | None = None,
            region: str = "us") -> None:
    """Install the app for ``org_id`` through the real pages, then save its write key."""
    answer = client.get(authorise(client, drift, org_id))
    assert answer.status_code == 303, answer.get_data(as_text=True)
    assert answer.headers["Location"].endswith("/setup")
    if write_key is None:
        return
    form = client.get("/setup").get_data(as_text=True)
    saved = client.post("/setup", data={"csrf_token": csrf_token(form), "write_key": write_key,
                                        "region": region})
    assert saved.status_code == 303, saved.get_data(as_text=True)
    assert saved.headers["Location"] == drift.settings_url


def webhook_file(event: str, case: str, org_id: int) -> dict[str, Any]:
    """A fixture webhook, sent as ``org_id``."""
    body: dict[str, Any] = json.loads((FIXTURES / event / f"{case}.json").read_text())
    body["orgId"] = org_id
    return body


def conversations_of(event: str, case: str) -> dict[str, dict[str, Any]]:
    """The conversations a fixture's Drift API answers hold, by id."""
    answers = json.loads((FIXTURES / event / f"{case}.drift-api.json").read_text())
    return {line.rsplit("/", 1)[1]: answer["json"]["data"] for line, answer in answers.items()}


def events_by_write_key(segment: FakeSegment) -> dict[str, list[str]]:
    """The event names (or call types) Segment received, per write key."""
    received: dict[str, list[str]] = defaultdict(list)
    for batch, auth in zip(segment.batches, segment.auth, strict=True):
        if not batch["batch"]:
            continue  # the empty batch that checked a write key as it was saved
        key = base64.b64decode(auth.removeprefix("Basic ")).decode().rstrip(":")
        received[key] += [message.get("event") or message["type"] for message in batch["batch"]]
    return dict(received)


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    """A fake Drift that knows the app's client id and secret (OAuth, contacts, lookups)."""
    with FakeDrift(CLIENT_ID, CLIENT_SECRET) as fake:
        yield fake


@pytest.fixture
def app_mode(make_app: Any, drift: FakeDrift, segment: FakeSegment) -> Callable[..., Flask]:
    """Build app-mode apps against the fakes, with these settings changed."""
    return lambda **overrides: make_app(**app_mode_settings(drift, segment, **overrides))
