"""The system tier: the real service in child processes, spoken to only over HTTP and its
command line; nothing here imports ``drift_segment_source`` (tests/test_layout.py checks).

Every test is marked ``system`` (``pytest -m "not system"`` leaves the tier out). Services
are started through :func:`services` (or a module's shared one) and stopped by their PID in
a finalizer, whatever the test's outcome; every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import Service
from ..support.webhooks import ADMIN_TOKEN, DRIFT_TOKEN, WRITE_KEY

HERE = Path(__file__).resolve().parent
StartService = Callable[..., Service]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``system``."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.system)


def service_env(database_url: str, segment: FakeSegment | None = None,
                drift: FakeDrift | None = None, **extra: Any) -> dict[str, str]:
    """A self-hosted service's settings pointing at the fakes, quick to react: one web
    worker (2 cores are shared by everything here), short polls and backoffs."""
    env = {"DATABASE_URL": database_url, "ADMIN_TOKEN": ADMIN_TOKEN, "WEB_CONCURRENCY": "1",
           "DELIVERY_POLL_SECONDS": "0.1", "DELIVERY_BACKOFF_SECONDS": "0.2",
           "DELIVERY_BACKOFF_MAX_SECONDS": "1"}
    if segment is not None:
        env.update(SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=segment.url)
    if drift is not None:
        env.update(DRIFT_API_URL=drift.url, DRIFT_ACCESS_TOKEN=DRIFT_TOKEN)
    env.update({key: str(value) for key, value in extra.items()})
    return env


def starter(folder: Path, started: list[Service]) -> StartService:
    """A function that starts a service (its log in ``folder``) and remembers it."""

    def start(env: dict[str, str], command: str = "serve", *args: str, name: str = "service",
              ready: bool = True, **options: Any) -> Service:
        log = folder / f"{name}-{len(started)}.log"
        service = Service(command, env, log, *args, **options)
        started.append(service)
        if ready:
            service.wait_ready()
        return service

    return start


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """Start services for one test; each is killed by its PID at the end."""
    started: list[Service] = []
    yield starter(tmp_path, started)
    for service in started:
        service.kill()


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for what a module's tests share (its database, its service's log)."""
    return tmp_path_factory.mktemp("module")


@pytest.fixture(scope="module")
def start_module_service(module_folder: Path) -> Iterator[StartService]:
    """Start services shared by the tests of a module; killed by PID after the module."""
    started: list[Service] = []
    yield starter(module_folder, started)
    for service in started:
        service.kill()


@pytest.fixture(scope="module")
def module_segment() -> Iterator[FakeSegment]:
    """A fake Segment shared by the tests of a module."""
    with FakeSegment() as fake:
        yield fake


@pytest.fixture(scope="module")
def module_drift() -> Iterator[FakeDrift]:
    """A fake Drift API shared by the tests of a module."""
    with FakeDrift() as fake:
        yield fake


@pytest.fixture
def segment() -> Iterator[FakeSegment]:
    """A fake Segment of the test's own."""
    with FakeSegment() as fake:
        yield fake


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    """A fake Drift API (any bearer token is let in)."""
    with FakeDrift() as fake:
        yield fake


def status(service: Service) -> dict[str, Any]:
    """``GET /status.json`` with the admin token."""
    answer = requests.get(service.url + "/status.json", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def states(service: Service) -> dict[str, int]:
    """Stored rows per state (every type), from ``/status.json``."""
    found: dict[str, int] = {}
    for counts in status(service)["counts"].values():
        for state, number in counts.items():
            if number:
                found[state] = found.get(state, 0) + number
    return found


def dead_reasons(service: Service) -> dict[int, str]:
    """The newest dead letters' reasons by row id (``deadletters list --json`` shows all)."""
    return {row["id"]: row["last_error"] for row in status(service)["dead_letters"]}
