"""Nothing lost, nothing double-counted: the real service under crashes and outages.

Each test runs ``drift-segment-source`` as real processes against a loopback fake Segment,
on SQLite and on PostgreSQL, and counts: webhooks posted, accepted, delivered, duplicates
(the same messageId sent again after a crash, which Segment drops), lost. The counts are
saved in test-artifacts/.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import WRITE_KEY
from .reliability import (
    distinct_webhooks,
    expected_message_id,
    post_concurrently,
    save_report,
    states,
)
from .support.fake_segment import FakeSegment
from .support.service import Service

pytestmark = pytest.mark.slow



def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def service_env(database_url: str, segment: FakeSegment, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": segment.url,
        "WEB_CONCURRENCY": "2",
        "DELIVERY_BATCH_SIZE": "50",
        "DELIVERY_POLL_SECONDS": "0.1",
        **extra,
    }


def identical_copies(segment: FakeSegment) -> bool:
    """Every message sent more than once was sent the same each time (one call, one id)."""
    seen: dict[str, dict[str, object]] = {}
    for message in segment.messages:
        first = seen.setdefault(message["messageId"], message)
        if first != message:
            return False
    return True


def test_sigkill_mid_delivery_loses_nothing(database_url: str, segment: FakeSegment,
                                            tmp_path: Path) -> None:
    segment.delay = 0.2  # slow Segment: delivery is still going when the kill comes
    env = service_env(database_url, segment, DELIVERY_LEASE_SECONDS="3")
    bodies = distinct_webhooks(1200)
    service = Service("serve", env, tmp_path / "first.log")
    service.wait_ready()
    posted = post_concurrently(service.url, bodies)
    assert wait_for(lambda: len(segment.messages) >= 300, 60), service.log()
    service.kill()
    delivered_before_kill = len(segment.message_id_counts())

    expected = {expected_message_id(body) for body in posted.accepted}
    restarted = Service("serve", env, tmp_path / "second.log")
    try:
        restarted.wait_ready()
        segment.delay = 0
        wait_for(lambda: set(segment.message_id_counts()) >= expected, 90)
        wait_for(lambda: states(database_url).get("pending", 0) == 0, 30)
    finally:
        restarted.stop()

    received = segment.message_id_counts()
    lost = expected - set(received)
    report = {
        "database": database_url.split(":")[0],
        "posted": len(bodies),
        "accepted": len(posted.accepted),
        "answers": posted.answers,
        "delivered_before_kill": delivered_before_kill,
        "delivered": len(expected & set(received)),
        "duplicates": sum(count - 1 for count in received.values()),
        "lost": len(lost),
        "unexpected": len(set(received) - expected),
        "states": states(database_url),
    }
    save_report(f"kill-test-{report['database']}", report)
    assert len(posted.accepted) == 1200, posted.answers
    assert 0 < delivered_before_kill < 1200, "the kill must come mid-delivery"
    assert lost == set(), report
    assert set(received) == expected
    assert identical_copies(segment)
    assert report["states"] == {"delivered": 1200}


def test_sigterm_releases_in_flight_rows_for_the_next_process(database_url: str,
                                                              segment: FakeSegment,
                                                              tmp_path: Path) -> None:
    segment.delay = 0.1
    # A long lease: rows a SIGTERM did not hand back would wait 10 minutes.
    env = service_env(database_url, segment, DELIVERY_LEASE_SECONDS="600")
    bodies = distinct_webhooks(600)
    service = Service("serve", env, tmp_path / "first.log")
    service.wait_ready()
    posted = post_concurrently(service.url, bodies)
    assert wait_for(lambda: len(segment.messages) >= 50, 60), service.log()
    started = time.monotonic()
    status = service.stop()
    took = time.monotonic() - started
    assert status == 0, service.log()
    assert took < 30, "must finish within gunicorn's graceful timeout"

    expected = {expected_message_id(body) for body in posted.accepted}
    segment.delay = 0
    restarted = Service("serve", env, tmp_path / "second.log")
    try:
        restarted.wait_ready()
        assert wait_for(lambda: set(segment.message_id_counts()) >= expected, 30), \
            "rows still leased: SIGTERM did not release them"
    finally:
        restarted.stop()
    assert identical_copies(segment)


def test_segment_outage_then_recovery_delivers_everything_and_kills_nothing(
        database_url: str, segment: FakeSegment, tmp_path: Path) -> None:
    env = service_env(database_url, segment, DELIVERY_BACKOFF_SECONDS="0.2",
                      DELIVERY_BACKOFF_MAX_SECONDS="1")
    segment.fail_always(503)
    service = Service("serve", env, tmp_path / "service.log")
    try:
        service.wait_ready()
        posted = post_concurrently(service.url, distinct_webhooks(500))
        time.sleep(4)  # several retry rounds against a Segment that fails every request
        during = states(database_url)
        failed_requests = segment.requests
        segment.recover()
        expected = {expected_message_id(body) for body in posted.accepted}
        wait_for(lambda: set(segment.message_id_counts()) >= expected, 60)
        wait_for(lambda: states(database_url).get("pending", 0) == 0, 30)
    finally:
        service.stop()
    received = segment.message_id_counts()
    report = {
        "database": database_url.split(":")[0],
        "posted": 500,
        "accepted": len(posted.accepted),
        "failed_segment_requests_during_outage": failed_requests,
        "states_during_outage": during,
        "delivered": len(expected & set(received)),
        "duplicates": sum(count - 1 for count in received.values()),
        "lost": len(expected - set(received)),
        "states_after": states(database_url),
    }
    save_report(f"outage-test-{report['database']}", report)
    assert len(posted.accepted) == 500
    assert during == {"pending": 500}, "nothing delivered or dead-lettered during the outage"
    assert failed_requests >= 2, "delivery kept retrying during the outage"
    assert report["lost"] == 0 and report["states_after"] == {"delivered": 500}


def test_two_workers_on_one_postgres_never_deliver_the_same_webhook(
        postgres_url: str, segment: FakeSegment, tmp_path: Path) -> None:
    segment.delay = 0.01
    web = Service("serve", service_env(postgres_url, segment, DELIVERY_IN_WEB="false"),
                  tmp_path / "web.log")
    web.wait_ready()
    posted = post_concurrently(web.url, distinct_webhooks(2000))
    web.stop()
    assert len(posted.accepted) == 2000
    env = service_env(postgres_url, segment, DELIVERY_BATCH_SIZE="20")
    workers = [Service("worker", env, tmp_path / f"worker-{n}.log") for n in range(2)]
    expected = {expected_message_id(body) for body in posted.accepted}
    try:
        wait_for(lambda: set(segment.message_id_counts()) >= expected, 90)
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.log()
    batches_per_id: Counter[str] = Counter()
    for batch in segment.batches:
        for message in batch["batch"]:
            batches_per_id[message["messageId"]] += 1
    senders = [worker for worker in workers if "delivered" in worker.log()]
    report = {"accepted": 2000, "batches": len(segment.batches),
              "delivered": len(expected & set(batches_per_id)),
              "in_more_than_one_batch": sum(1 for n in batches_per_id.values() if n > 1),
              "workers_that_delivered": len(senders)}
    save_report("two-workers-postgres", report)
    assert set(batches_per_id) == expected
    assert report["in_more_than_one_batch"] == 0
    assert len(senders) == 2, "both workers took part"
