"""The integration tier's fixtures: apps on SQLite and on a real PostgreSQL, fixed clocks,
fakes (the fakes, clock and launchers themselves live in tests/support).

The schema is migrated once per session, into a template database on each: every test gets a
copy of it (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from drift_segment_source import create_app
from drift_segment_source.store.db import make_engine
from drift_segment_source.store.store import Store

from ..conftest import postgres_database
from ..support.fake_segment import FakeSegment
from ..support.postgres import create_database
from ..support.webhooks import DRIFT_TOKEN, TOKEN, WRITE_KEY, webhook
from .app_mode import app_mode, drift  # noqa: F401 (fixtures, shared by the app-mode tests)
from .browser import browser  # noqa: F401 (a fixture, shared by the page tests)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "drift"
SEGMENT_HOST = "https://segment.test"
DRIFT_API_URL = "https://drift.test"
__all__ = ["DRIFT_TOKEN", "TOKEN", "WRITE_KEY", "webhook"]
# The receipt time fixtures assume for events without a time of their own.
FIXED_RECEIPT = 1714420800.0


def migrated(url: str) -> None:
    """Migrate the database at ``url`` to the newest schema."""
    store = Store(make_engine(url))
    try:
        store.migrate()
    finally:
        store.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema, copied by every test that wants one."""
    path = tmp_path_factory.mktemp("template") / "store.sqlite3"
    migrated(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:  # the whole schema in the file, no WAL
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_server: str | None) -> str | None:
    """The name of a PostgreSQL database migrated to the newest schema (the tests' template)."""
    if postgres_server is None:
        return None
    url = create_database(postgres_server, "dss_template")
    migrated(url)
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str | None,
                 sqlite_template: Path, postgres_template: str | None) -> Iterator[str]:
    """A database with the newest schema and no rows: each test runs once on SQLite and once
    on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
    else:
        yield from postgres_database(postgres_server, postgres_template)


@pytest.fixture
def postgres_url(postgres_server: str | None, postgres_template: str | None) -> Iterator[str]:
    """A PostgreSQL database only, with the newest schema (tests of PostgreSQL's behaviour)."""
    yield from postgres_database(postgres_server, postgres_template)


AppFactory = Callable[..., Flask]


class ReadClock:
    """A Clock whose wall and monotonic time both come from one function the test moves."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read

    def wall(self) -> float:
        return self.read()

    def monotonic(self) -> float:
        return self.read()

    def wait(self, event: Any, seconds: float) -> bool:
        return bool(event.wait(seconds))


@pytest.fixture
def make_app(database_url: str) -> Iterator[AppFactory]:
    """Build apps on this test's database; settings default to a full self-hosted setup."""
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        # Imported here: the system tests share this conftest and never load the package.

        settings: dict[str, Any] = {
            "DATABASE_URL": database_url,
            "DRIFT_VERIFICATION_TOKEN": TOKEN,
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_HOST": SEGMENT_HOST,
            "DRIFT_API_URL": DRIFT_API_URL,
            "DRIFT_ACCESS_TOKEN": DRIFT_TOKEN,
            "DELIVERY_BACKOFF_SECONDS": 0.01,
            "DELIVERY_BACKOFF_MAX_SECONDS": 0.05,
            # One run_round() finishes every lookup it starts, so tests can count rounds;
            # tests of slow lookups set a short wait themselves.
            "DELIVERY_LOOKUP_WAIT_SECONDS": 30,
        }
        settings.update(overrides)
        components: dict[str, Any] = {}
        if settings.get("CLOCK") is not None:
            read = settings.pop("CLOCK")
            components["clock"] = read if hasattr(read, "wall") else ReadClock(read)
        if settings.get("TRANSPORT") is not None:
            components["segment_transport"] = settings.pop("TRANSPORT")
        app = create_app(settings, **components)  # on a copy of the migrated template
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["store"].close()


@pytest.fixture
def segment() -> Iterator[FakeSegment]:
    """A loopback fake of Segment's Tracking API (see tests/support/fake_segment.py)."""
    with FakeSegment() as fake:
        yield fake


@pytest.fixture
def fixed_clock() -> Callable[[], float]:
    """A clock stopped at the fixtures' receipt time."""
    return lambda: FIXED_RECEIPT



def seen_now(app: Flask) -> None:
    """The store sees an event at the test clock's present (a linking identify's key, the
    lightest kind): retention counts from the newest event the store has seen."""
    store = app.extensions["store"]
    store.record("nobody", remember=[hashlib.sha256(str(store.now()).encode()).digest()[:16]])
