"""What several processes share is judged on one time and one key: on PostgreSQL the wall
clock is the database's (hosts whose clocks disagree still agree on leases and due times),
and a destination's key is written and matched alike however long it is."""

from __future__ import annotations

from drift_segment_source.store.database_clock import DatabaseClock
from drift_segment_source.store.db import make_engine
from drift_segment_source.store.deliveries import Failure
from drift_segment_source.store.store import Store

from ..support.clock import FakeClock
from .conftest import AppFactory, webhook


def test_hosts_whose_clocks_disagree_keep_the_databases_time(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        behind = DatabaseClock(FakeClock(wall=1_700_000_000.0), engine)
        ahead = DatabaseClock(FakeClock(wall=1_700_000_000.0 + 3600), engine)
        assert abs(behind.wall() - ahead.wall()) < 5, "one time, whatever the host says"
        with engine.connect() as connection:
            database = connection.exec_driver_sql(
                "SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar_one()
        assert abs(behind.wall() - float(database)) < 5
    finally:
        engine.dispose()


def test_two_loops_on_hosts_an_hour_apart_never_take_each_others_leases(
        postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    behind = Store(engine, DatabaseClock(FakeClock(wall=1_700_000_000.0), engine))
    ahead = Store(engine, DatabaseClock(FakeClock(wall=1_700_000_000.0 + 3600), engine))
    try:
        behind.accept(5000883, "new_conversation", "drift-new_conversation-" + "a" * 32, "{}",
                      received_at=behind.now())
        assert len(behind.claim("loop-behind", 10, lease_seconds=60)) == 1
        assert ahead.claim("loop-ahead", 10, lease_seconds=60) == [], "its lease holds"
    finally:
        behind.close()


def test_a_destination_key_longer_than_the_column_still_finds_its_rows(
        make_app: AppFactory) -> None:
    """A Segment host behind a proxy with a long path makes a long circuit key."""
    app = make_app()
    store = app.extensions["store"]
    app.test_client().post("/webhooks/drift", json=webhook(
        "new_conversation", {"id": 1, "contactId": 2, "createdAt": 1714419312425}))
    [row] = store.claim("loop", 10, lease_seconds=60)
    destination = "segment:https://proxy.example/" + "p" * 200 + ":0123456789ab"
    assert store.record("loop", retry={store.now() + 900: [
        Failure(row.id, "Segment 503: down", None, destination)]}) == 1
    assert store.make_due_behind(destination) == 1
    assert [again.id for again in store.claim("loop", 10, lease_seconds=60)] == [row.id]
