"""On SQLite, a webhook waits for the database's write lock at most
``DATABASE_LOCK_TIMEOUT_SECONDS``, then gets ``503 store_unavailable`` (Drift may retry), and
``/healthz`` answers while writers wait.

The lock is held by a real second process (a child that takes the lock file and SQLite's
write lock the way a delivery worker does), stopped with SIGSTOP, then resumed and reaped.
Every wait in these tests has a generous bound so that a service that waits for ever fails
the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from drift_segment_source import create_app
from drift_segment_source.config import load_settings
from drift_segment_source.store.commits import StoreUnavailable, WriteLock
from drift_segment_source.store.db import make_engine

from ..support.service import Service
from .conftest import FIXTURES, TOKEN

LOCK_SECONDS = 1.0
# A service that honours the bound answers well within this; one that waits for SQLite's
# old 30 s busy timeout (or for ever) does not.
SAFETY_SECONDS = 20.0
WEBHOOK = json.loads((FIXTURES / "new_conversation" / "seed_example.json").read_text())

# The child: takes the write lock as the service's writers do (the lock file beside the
# database, then SQLite's own write lock), says so, and lets go when told on stdin.
HOLDER = """
import fcntl, sqlite3, sys
database, take_file_lock = sys.argv[1], sys.argv[2] == "1"
if take_file_lock:
    lock = open(database + ".write-lock", "ab")
    fcntl.flock(lock, fcntl.LOCK_EX)
connection = sqlite3.connect(database, isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
print("released", flush=True)
"""


class LockHolder:
    """A child process holding the database's write lock until ``release()``."""

    def __init__(self, database: Path, file_lock: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(database), "1" if file_lock else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "held"

    def stop(self) -> None:
        """SIGSTOP: the holder freezes with the lock held (a hung or paused worker)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def release(self) -> None:
        """Resume the holder, let go of the lock and reap the process."""
        self.resume()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(timeout=SAFETY_SECONDS)

    def reap(self) -> None:
        """Whatever the test did, the child does not outlive it."""
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=SAFETY_SECONDS)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
def holders() -> Iterator[list[LockHolder]]:
    made: list[LockHolder] = []
    yield made
    for holder in made:
        holder.reap()


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        app.extensions["store"].close()


def sqlite_app(apps: list[Flask], database: Path, lock_seconds: float) -> Flask:
    """The service on the SQLite file ``database``, its schema made, no delivery loop."""
    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "DRIFT_VERIFICATION_TOKEN": TOKEN,
                      "SEGMENT_WRITE_KEY": "", "DATABASE_LOCK_TIMEOUT_SECONDS": lock_seconds})
    app.extensions["store"].migrate()
    apps.append(app)
    return app


def hold(holders: list[LockHolder], database: Path, file_lock: bool = True) -> LockHolder:
    holder = LockHolder(database, file_lock)
    holders.append(holder)
    return holder


def post_in_thread(client: Any, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(client.post("/webhooks/drift", json=body)), daemon=True)
    thread.start()
    return thread, answers


def answered(thread: threading.Thread, answers: list[Any]) -> Any:
    thread.join(timeout=SAFETY_SECONDS)
    assert not thread.is_alive(), "the webhook is still waiting for the write lock"
    return answers[0]


# -- the setting ------------------------------------------------------------------------------


def test_the_wait_is_a_declared_setting_of_a_few_seconds() -> None:
    assert load_settings({})["DATABASE_LOCK_TIMEOUT_SECONDS"] == 5.0
    assert load_settings({"DATABASE_LOCK_TIMEOUT_SECONDS": "2.5"})[
        "DATABASE_LOCK_TIMEOUT_SECONDS"] == 2.5


def test_sqlite_waits_as_long_as_the_setting_says(database: Path) -> None:
    engine = make_engine(f"sqlite:///{database}", lock_timeout=2.5)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    assert WriteLock.for_engine(engine).timeout == 2.5
    engine.dispose()


# -- the file lock, with a real second process ------------------------------------------------


def test_a_stopped_holder_makes_the_lock_wait_run_out(database: Path,
                                                      holders: list[LockHolder]) -> None:
    holder = hold(holders, database)
    holder.stop()
    lock = WriteLock(str(database) + ".write-lock", timeout=0.5)
    with pytest.raises(StoreUnavailable, match="write lock"):
        with lock.held():
            pass
    # Once the wait ran out, the next writers are told at once while the holder is stuck.
    with pytest.raises(StoreUnavailable):
        with lock.held():
            pass
    holder.release()
    with lock.held():
        pass


def test_a_holder_that_resumes_mid_wait_hands_the_lock_over(database: Path,
                                                            holders: list[LockHolder]) -> None:
    holder = hold(holders, database)
    holder.stop()
    lock = WriteLock(str(database) + ".write-lock", timeout=SAFETY_SECONDS)
    got_it = threading.Event()

    def writer() -> None:
        with lock.held():
            got_it.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert not got_it.wait(0.3)  # waiting behind the stopped holder
    holder.release()
    thread.join(timeout=SAFETY_SECONDS)
    assert got_it.is_set()


def test_a_wait_that_ran_out_leaves_no_lock_behind(database: Path,
                                                   holders: list[LockHolder]) -> None:
    holder = hold(holders, database)
    holder.stop()
    lock = WriteLock(str(database) + ".write-lock", timeout=0.3)
    with pytest.raises(StoreUnavailable):
        with lock.held():
            pass
    holder.release()
    # The helper that was still waiting got the lock and let it go: another process can
    # take it (a second holder would block for ever otherwise).
    second = hold(holders, database)
    second.release()
    with lock.held():
        pass


# -- the webhook answers ----------------------------------------------------------------------


def test_a_webhook_gets_503_when_the_write_lock_is_not_free_in_time(
        apps: list[Flask], database: Path, holders: list[LockHolder]) -> None:
    app = sqlite_app(apps, database, LOCK_SECONDS)
    holder = hold(holders, database)
    holder.stop()
    answer = answered(*post_in_thread(app.test_client(), WEBHOOK))
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "store_unavailable"
    holder.release()
    retried = app.test_client().post("/webhooks/drift", json=WEBHOOK)
    assert (retried.status_code, retried.get_json()["status"]) == (200, "accepted")
    assert app.extensions["store"].counts() == {("new_conversation", "pending"): 1}


def test_sqlites_own_lock_is_waited_for_once_and_bounded(
        apps: list[Flask], database: Path, holders: list[LockHolder]) -> None:
    # A writer that holds SQLite's lock without the lock file (a process of another version,
    # the sqlite3 shell): the insert's busy timeout is the bound, and it is not retried.
    app = sqlite_app(apps, database, LOCK_SECONDS)
    holder = hold(holders, database, file_lock=False)
    holder.stop()
    answer = answered(*post_in_thread(app.test_client(), WEBHOOK))
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "store_unavailable"
    holder.release()


def test_a_webhook_waiting_when_the_holder_lets_go_is_accepted(
        apps: list[Flask], database: Path, holders: list[LockHolder]) -> None:
    app = sqlite_app(apps, database, SAFETY_SECONDS)
    holder = hold(holders, database)
    holder.stop()
    thread, answers = post_in_thread(app.test_client(), WEBHOOK)
    thread.join(timeout=0.3)
    assert thread.is_alive()  # waiting, within its bound
    holder.release()
    answer = answered(thread, answers)
    assert (answer.status_code, answer.get_json()["status"]) == (200, "accepted")


# -- the real service (gunicorn) --------------------------------------------------------------


@pytest.mark.slow
def test_intake_answers_503_and_healthz_answers_while_a_stopped_worker_holds_the_lock(
        tmp_path: Path, database: Path, holders: list[LockHolder]) -> None:
    service = Service("serve", {
        "DATABASE_URL": f"sqlite:///{database}", "SEGMENT_WRITE_KEY": "",
        "WEB_CONCURRENCY": "1", "WEB_THREADS": "4",
        "DATABASE_LOCK_TIMEOUT_SECONDS": str(LOCK_SECONDS),
    }, tmp_path / "service.log")
    try:
        service.wait_ready()
        holder = hold(holders, database)
        holder.stop()

        def post(index: int) -> requests.Response:
            body = {**WEBHOOK, "data": {**WEBHOOK["data"], "id": 1000 + index}}
            return requests.post(service.url + "/webhooks/drift", json=body,
                                 headers={"X-Verification-Token": TOKEN},
                                 timeout=SAFETY_SECONDS)

        with ThreadPoolExecutor(13) as pool:
            webhooks = [pool.submit(post, index) for index in range(12)]
            health = pool.submit(requests.get, service.url + "/healthz",
                                 timeout=SAFETY_SECONDS)
            answers = [future.result() for future in webhooks]
            assert health.result().status_code == 200
        assert [answer.status_code for answer in answers] == [503] * 12, service.log()
        assert {answer.json()["error"] for answer in answers} == {"store_unavailable"}

        holder.release()
        retried = post(0)
        assert (retried.status_code, retried.json()["status"]) == (200, "accepted")
    finally:
        service.stop()
