"""Database deadlines: connecting and every statement end in bounded time.

Without them, a PostgreSQL host that stops answering holds a request thread (and the
delivery loop) for as long as TCP takes to give up. SQLite is local: its only wait is for
another writer, bounded by its busy timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

from drift_segment_source import create_app
from drift_segment_source.store.db import make_engine

from .conftest import FIXTURES, TOKEN, AppFactory

WEBHOOK = (FIXTURES / "new_conversation" / "seed_example.json").read_bytes()


@pytest.fixture
def unanswering_server() -> Iterator[int]:
    """A port on 127.0.0.1 where the kernel completes connections and nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_connecting_to_a_database_that_does_not_answer_gives_up_at_the_connect_timeout(
        unanswering_server: int) -> None:
    engine = make_engine(f"postgresql://relay:pw@127.0.0.1:{unanswering_server}/relay",
                         connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(OperationalError), engine.connect():
        pass
    assert 1.5 < time.monotonic() - started < 5
    engine.dispose()


def test_a_statement_over_the_statement_timeout_is_cancelled(postgres_url: str) -> None:
    engine = make_engine(postgres_url, statement_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="statement timeout"), engine.connect() as db:
        db.execute(sqlalchemy.text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 3
    engine.dispose()


def test_every_connection_of_the_service_carries_the_configured_timeouts(
        make_app: AppFactory, database_url: str) -> None:
    app = make_app(DATABASE_STATEMENT_TIMEOUT_SECONDS=1.5)
    engine = app.extensions["store"].engine
    if not database_url.startswith("postgresql"):
        with engine.connect() as db:  # DATABASE_LOCK_TIMEOUT_SECONDS, 5 s by default
            assert db.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        return
    with engine.connect() as db:
        assert db.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
    # The kept connection that inserts webhooks (commits.py) is a raw one from the same pool.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "1500ms"
    finally:
        raw.close()


def test_defaults_and_the_urls_own_server_options(postgres_url: str) -> None:
    engine = make_engine(postgres_url + "?options=-c%20lock_timeout%3D1000")
    with engine.connect() as db:
        assert db.exec_driver_sql("SHOW statement_timeout").scalar() == "30s"
        assert db.exec_driver_sql("SHOW lock_timeout").scalar() == "1s"
    engine.dispose()
    unlimited = make_engine(postgres_url, statement_timeout=0)
    with unlimited.connect() as db:
        assert db.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
    unlimited.dispose()


def test_a_webhook_while_the_table_is_locked_gets_503_at_the_statement_timeout(
        postgres_url: str) -> None:
    app = create_app({"DATABASE_URL": postgres_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                      "DATABASE_STATEMENT_TIMEOUT_SECONDS": 1})
    app.extensions["store"].migrate()
    locker = make_engine(postgres_url, statement_timeout=0)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with locker.begin() as db:
            db.exec_driver_sql("LOCK TABLE webhooks IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        answer = app.test_client().post("/webhooks/drift", data=WEBHOOK,
                                        headers={"Content-Type": "application/json",
                                                 "X-Verification-Token": TOKEN})
        assert (answer.status_code, answer.get_json()["error"]) == (503, "store_unavailable")
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join(10)
        locker.dispose()
    # Once the lock is gone the same webhook is taken.
    again = app.test_client().post("/webhooks/drift", data=WEBHOOK, headers={
        "Content-Type": "application/json", "X-Verification-Token": TOKEN})
    assert again.get_json()["status"] == "accepted"
    app.extensions["store"].close()
