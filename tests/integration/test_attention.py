"""The one source of the health surfaces (``attention.py``) on SQLite and PostgreSQL: refusals
counted per minute in few writes, and circuits shown only for destinations configured now."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.attention import attention_of
from drift_segment_source.delivery.breakers import drift_key, segment_key
from drift_segment_source.store.db import refused_webhooks
from drift_segment_source.store.refusals import DRIFT_WRONG, SEGMENT_MISSING, Refusals

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .app_mode import (
    ORG_A,
    ORG_B,
    WRITE_KEY_A,
    WRITE_KEY_B,
    install,
)
from .conftest import SEGMENT_HOST, WRITE_KEY, AppFactory


class Clock:
    """A wall clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(app: Flask) -> list[tuple[int, str, int]]:
    with app.extensions["store"].engine.connect() as connection:
        found = connection.execute(sqlalchemy.select(refused_webhooks)
                                   .order_by(refused_webhooks.c.minute,
                                             refused_webhooks.c.reason)).all()
    return [(int(minute), str(reason), int(count)) for minute, reason, count in found]


def test_refusals_are_added_up_in_memory_and_written_once_per_flush(
        make_app: AppFactory) -> None:
    app = make_app()
    clock = Clock()
    refusals = Refusals(app.extensions["store"].engine, clock=clock, flush_seconds=3600)
    for _ in range(500):
        refusals.count(DRIFT_WRONG)
    refusals.count(SEGMENT_MISSING)
    assert rows(app) == []  # nothing written per request
    refusals.flush()
    minute = int(clock.now // 60)
    assert rows(app) == [(minute, DRIFT_WRONG, 500), (minute, SEGMENT_MISSING, 1)]
    for _ in range(7):
        refusals.count(DRIFT_WRONG)
    refusals.flush()
    assert rows(app) == [(minute, DRIFT_WRONG, 507), (minute, SEGMENT_MISSING, 1)]
    assert refusals.last_hour() == {DRIFT_WRONG: 507, SEGMENT_MISSING: 1}
    clock.now += 3600  # an hour later they are history
    assert refusals.last_hour() == {}
    clock.now += 25 * 3600
    refusals.count(DRIFT_WRONG)
    refusals.flush()  # rows older than a day go as new counts are written
    assert [row[1:] for row in rows(app)] == [(DRIFT_WRONG, 1)]


def test_refusals_wait_for_a_store_that_is_down_and_are_never_lost_to_it(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    refusals = Refusals(app.extensions["store"].engine, flush_seconds=3600)
    refusals.count(DRIFT_WRONG)
    working = refusals._write

    def down(pending: Any) -> None:
        raise sqlalchemy.exc.OperationalError("insert", {}, Exception("database is down"))

    monkeypatch.setattr(refusals, "_write", down)
    refusals.flush()
    assert refusals.last_hour() == {}
    monkeypatch.setattr(refusals, "_write", working)
    refusals.count(DRIFT_WRONG)
    refusals.flush()
    assert refusals.last_hour() == {DRIFT_WRONG: 2}


def test_refusals_are_written_within_seconds_without_a_further_request(
        make_app: AppFactory) -> None:
    app = make_app()
    refusals = Refusals(app.extensions["store"].engine, flush_seconds=0.05)
    refusals.count(DRIFT_WRONG)
    deadline = time.monotonic() + 10
    while not refusals.last_hour() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert refusals.last_hour() == {DRIFT_WRONG: 1}


def test_a_circuit_of_a_host_no_longer_configured_is_hidden_then_forgotten(
        make_app: AppFactory) -> None:
    app = make_app()
    store = app.extensions["store"]
    now = time.time()
    store.set_breaker(segment_key("https://old-proxy.example:8443", WRITE_KEY), now - 153)
    store.set_breaker(segment_key(SEGMENT_HOST, "an-old-write-key"), now - 60)
    store.set_breaker(segment_key(SEGMENT_HOST, WRITE_KEY), now - 30)
    store.set_breaker(drift_key(5000883), now - 10)
    attention = attention_of(app)
    assert [(circuit.kind, circuit.host) for circuit in attention.circuits] == [
        ("segment", SEGMENT_HOST), ("drift_api", "https://drift.test")]
    assert len(store.open_breakers()) == 4  # hidden, still recorded
    make_delivery(app)  # the delivery side starts: what nobody can close is deleted
    assert sorted(store.open_breakers()) == sorted([
        segment_key(SEGMENT_HOST, WRITE_KEY), drift_key(5000883)])




def test_a_drift_api_circuit_is_forgotten_once_no_drift_token_is_set(
        make_app: AppFactory) -> None:
    app = make_app()
    app.extensions["store"].set_breaker(drift_key(5000883), time.time() - 10)
    restarted = make_app(DRIFT_ACCESS_TOKEN="")  # the Drift API is not called any more
    assert attention_of(restarted).circuits == ()
    make_delivery(restarted)
    assert restarted.extensions["store"].open_breakers() == {}


def test_two_sources_behind_one_long_host_keep_circuits_of_their_own(
        make_app: AppFactory) -> None:
    long_host = "https://segment-proxy.internal.example.com/tenants/eu-west-1/api"
    app = make_app(SEGMENT_HOST=long_host)
    store = app.extensions["store"]
    store.set_breaker(segment_key(long_host, WRITE_KEY), time.time() - 20)
    store.set_breaker(segment_key(long_host, "another-write-key"), None)  # the other recovers
    assert [(circuit.kind, circuit.host) for circuit in attention_of(app).circuits] == [
        ("segment", "https://segment-proxy.internal.example.com")]


def test_app_mode_shows_the_circuits_of_installed_orgs_never_their_ids_publicly(
        app_mode: Callable[..., Flask], drift: FakeDrift, segment: FakeSegment) -> None:
    app = app_mode(ADMIN_TOKEN="admin-token-123456")
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    install(app.test_client(), drift, ORG_B, WRITE_KEY_B)
    store = app.extensions["store"]
    now = time.time()
    store.set_breaker(segment_key(segment.url, WRITE_KEY_A), now - 100)
    store.set_breaker(segment_key(segment.url, "a-key-org-b-replaced"), now - 100)
    store.set_breaker(drift_key(ORG_B), now - 50)
    store.set_breaker(drift_key(4242), now - 50)  # an org that never installed (or was removed)
    ready = app.test_client().get("/readyz").get_json()
    assert ready["attention"]["open_circuits"] == {"segment": 1, "drift_api": 1}
    assert len(ready["warnings"]) == 2
    assert ready["warnings"][0].startswith(
        f"Segment at {segment.url} is not answering for 1 Segment source (circuit open for ")
    assert ready["warnings"][1].startswith(
        f"The Drift API at {drift.url} is not answering for 1 organisation (circuit open for ")
    assert str(ORG_B) not in str(ready) and str(ORG_B) not in app.test_client().get(
        "/").get_data(as_text=True)
    status = app.test_client().get("/status.json", headers={
        "Authorization": "Bearer admin-token-123456"}).get_json()
    assert [(circuit["kind"], circuit["org_id"]) for circuit in status["open_circuits"]] == [
        ("segment", None), ("drift_api", ORG_B)]
    make_delivery(app)
    assert sorted(store.open_breakers()) == sorted([segment_key(segment.url, WRITE_KEY_A),
                                                    drift_key(ORG_B)])
