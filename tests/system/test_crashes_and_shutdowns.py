"""Crashes and shutdowns lose nothing: a SIGKILL mid-delivery, a SIGTERM with rows in
flight and two workers on one PostgreSQL database, each counted at the fake Segment: every
accepted webhook delivered, a copy only ever under the same messageId (which Segment
drops), none lost (see docs/reliability.md)."""

from __future__ import annotations

import json
from collections import Counter

from ..support.fake_segment import FakeSegment
from ..support.service import wait_for
from ..support.webhooks import contact_of, distinct_webhooks, post_concurrently
from .conftest import StartService, service_env, states


def identical_copies(segment: FakeSegment) -> bool:
    """Every message sent more than once was the same each time (one call, one id)."""
    seen: dict[str, str] = {}
    for message in segment.messages:
        text = json.dumps(message, sort_keys=True)
        if seen.setdefault(message["messageId"], text) != text:
            return False
    return True


def test_sigkill_mid_delivery_loses_nothing(start_service: StartService,
                                            segment: FakeSegment, database_url: str) -> None:
    segment.delay = 0.2  # a slow Segment: delivery is still going when the kill comes
    env = service_env(database_url, segment, WEB_CONCURRENCY=2, DELIVERY_BATCH_SIZE=25,
                      DELIVERY_LEASE_SECONDS=3)
    bodies = distinct_webhooks(300)
    service = start_service(env)
    answers = post_concurrently(service.url, bodies, connections=16)
    assert {answer.label for answer in answers} == {"200 accepted"}
    assert wait_for(lambda: len(segment.messages) >= 75, 30), service.log()
    service.kill()
    delivered_before_kill = len(segment.message_id_counts())
    assert 0 < delivered_before_kill < 300, "the kill must come mid-delivery"
    segment.delay = 0
    restarted = start_service(env, name="restarted")
    assert wait_for(lambda: states(restarted) == {"delivered": 300}, 30), states(restarted)
    assert {contact_of(body) for body in bodies} == set(segment.by_anonymous_id())
    assert len(segment.message_id_counts()) == 300
    assert identical_copies(segment)


def test_sigterm_releases_in_flight_rows_for_the_next_process(
        start_service: StartService, segment: FakeSegment, database_url: str) -> None:
    segment.delay = 0.1
    # A long lease: rows a SIGTERM did not hand back would wait 10 minutes.
    env = service_env(database_url, segment, WEB_CONCURRENCY=2, DELIVERY_BATCH_SIZE=25,
                      DELIVERY_LEASE_SECONDS=600)
    bodies = distinct_webhooks(200)
    service = start_service(env)
    post_concurrently(service.url, bodies, connections=16)
    assert wait_for(lambda: len(segment.messages) >= 25, 30), service.log()
    assert service.stop() == 0, service.log()
    assert service.stop_seconds is not None and service.stop_seconds < 25
    segment.delay = 0
    restarted = start_service(env, name="restarted")
    assert wait_for(lambda: states(restarted) == {"delivered": 200}, 20), \
        "rows still leased: SIGTERM did not release them"
    assert len(segment.message_id_counts()) == 200
    assert identical_copies(segment)


def test_two_workers_on_one_postgres_never_deliver_the_same_webhook(
        start_service: StartService, segment: FakeSegment, postgres_url: str) -> None:
    segment.delay = 0.01
    web = start_service(service_env(postgres_url, segment, DELIVERY_IN_WEB="false"),
                        name="web")
    bodies = distinct_webhooks(400)
    answers = post_concurrently(web.url, bodies, connections=16)
    assert {answer.label for answer in answers} == {"200 accepted"}
    env = service_env(postgres_url, segment, DELIVERY_BATCH_SIZE=20)
    workers = [start_service(env, "worker", name=f"worker-{n}", ready=False) for n in range(2)]
    contacts = {contact_of(body) for body in bodies}
    try:
        assert wait_for(lambda: contacts <= set(segment.by_anonymous_id()), 60)
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0], [worker.log() for worker in workers]
    in_batches: Counter[str] = Counter()
    for batch in segment.batches:
        in_batches.update(message["messageId"] for message in batch["batch"])
    assert len(in_batches) == 400 and max(in_batches.values()) == 1
    assert all("delivered" in worker.log_text() for worker in workers), "both took part"
