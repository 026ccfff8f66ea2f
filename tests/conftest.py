"""Fixtures every tier may use: a throwaway PostgreSQL server, and empty databases on SQLite
and on it (the integration tier hands out migrated copies instead; see its conftest)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.postgres import create_database, drop_database, temporary_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """A PostgreSQL server started for the session on 127.0.0.1 (None when none can be)."""
    with temporary_server() as url:
        yield url


def postgres_database(server: str | None, template: str | None = None) -> Iterator[str]:
    """A database of its own on the session's server, dropped afterwards."""
    if server is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but no PostgreSQL server could be started")
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql, "
                    "or set TEST_POSTGRES_URL); .ci/run installs it")
    url = create_database(server, template=template)
    try:
        yield url
    finally:
        drop_database(server, url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                 postgres_server: str | None) -> Iterator[str]:
    """An empty database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        yield from postgres_database(postgres_server)


@pytest.fixture
def postgres_url(postgres_server: str | None) -> Iterator[str]:
    """An empty PostgreSQL database only."""
    yield from postgres_database(postgres_server)
