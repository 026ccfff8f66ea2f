"""The write key is checked when it is saved (docs/app-mode.md#what-an-org-admin-sees).

An empty batch (it creates no event) is posted with the key to the host of the region the
admin chose. A key Segment refuses is a form error and nothing is saved; when Segment cannot
answer, the key is saved anyway and the next page says it could not be checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from drift_segment_source.app import make_delivery
from drift_segment_source.app_mode import write_key

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.loopback import free_port
from .app_mode import (
    ORG_A,
    WRITE_KEY_A,
    WRITE_KEY_B,
    app_mode_settings,
    csrf_token,
    events_by_write_key,
    install,
    webhook_file,
)
from .conftest import AppFactory

NEW_CONVERSATION = "Drift Source Event: new_conversation"



@pytest.fixture
def eu_segment() -> Iterator[FakeSegment]:
    with FakeSegment() as fake:
        yield fake


@pytest.fixture
def app_mode(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment,
             eu_segment: FakeSegment) -> Callable[..., Flask]:
    """App mode with the US region at ``segment`` and the EU region at ``eu_segment``."""
    def build(**overrides: Any) -> Flask:
        settings = {"SEGMENT_HOST": segment.url, "SEGMENT_EU_HOST": eu_segment.url,
                    **overrides}
        return make_app(**app_mode_settings(drift, segment, **settings))
    return build


def save(client: FlaskClient, key: str, region: str = "us") -> Any:
    """Submit the write-key form the page gave this browser."""
    form = client.get("/setup").get_data(as_text=True)
    return client.post("/setup", data={"csrf_token": csrf_token(form), "write_key": key,
                                       "region": region})


def test_the_key_is_checked_with_an_empty_batch_at_the_chosen_regions_host(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        eu_segment: FakeSegment) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A, region="eu")
    assert (eu_segment.checks, segment.checks) == ([WRITE_KEY_A], [])
    assert eu_segment.messages == [] and segment.messages == []


@pytest.mark.parametrize("status", [401, 403, 400])
def test_a_key_segment_refuses_is_a_form_error_and_nothing_is_saved(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        status: int) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    segment.refuse_write_key(WRITE_KEY_A, status)
    refused = save(client, WRITE_KEY_A)
    page = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert f"Segment refused this write key (HTTP {status})" in page
    assert 'aria-invalid="true"' in page and WRITE_KEY_A not in page
    assert not app.extensions["routing"].directory.get(ORG_A).has_write_key
    # The same page takes the right key at once.
    fixed = save(client, WRITE_KEY_B)
    assert fixed.status_code == 303 and fixed.headers["Location"] == drift.settings_url
    assert app.extensions["routing"].directory.secrets(ORG_A).write_key == WRITE_KEY_B


@pytest.mark.parametrize("status", [500, 503, 429])
def test_segment_failing_saves_the_key_and_the_next_page_warns(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        status: int) -> None:
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    assert client.post("/webhooks/drift", json=webhook_file(
        "new_conversation", "seed_example", ORG_A)).get_json()["status"] == "accepted"
    segment.fail_always(status)
    saved = save(client, WRITE_KEY_A)
    page = saved.get_data(as_text=True)
    assert saved.status_code == 200
    assert "Write key saved, but not checked" in page
    assert f"Segment answered HTTP {status} to check the key" in page
    assert f'href="{drift.settings_url}"' in page and "Continue to Drift" in page
    assert app.extensions["routing"].directory.secrets(ORG_A).write_key == WRITE_KEY_A
    # The held webhook was released by the save and goes out once Segment is back.
    segment.recover()
    assert make_delivery(app).run_round() == 1
    assert events_by_write_key(segment) == {WRITE_KEY_A: [NEW_CONVERSATION]}


def test_segment_unreachable_saves_the_key_and_the_next_page_warns(
        app_mode: Callable[..., Flask], drift: FakeDrift) -> None:
    app = app_mode(SEGMENT_EU_HOST=f"http://127.0.0.1:{free_port()}")  # nothing listens
    client = app.test_client()
    install(client, drift, ORG_A)
    saved = save(client, WRITE_KEY_A, region="eu")
    assert saved.status_code == 200
    assert "Segment could not be reached to check the key" in saved.get_data(as_text=True)
    assert app.extensions["routing"].directory.get(ORG_A).has_write_key


def test_a_slow_segment_is_given_up_after_a_short_timeout(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write_key, "CHECK_TIMEOUT_SECONDS", 0.5)
    segment.delay = 5
    app = app_mode()
    client = app.test_client()
    install(client, drift, ORG_A)
    started = time.monotonic()
    saved = save(client, WRITE_KEY_A)
    assert time.monotonic() - started < 3
    assert "Segment could not be reached" in saved.get_data(as_text=True)
    assert app.extensions["routing"].directory.get(ORG_A).has_write_key
