"""Outages end fast: while Segment is down a circuit breaker stops spending attempts on it,
nothing is delivered or dead-lettered meanwhile, and once a probe succeeds the backlog
resumes within seconds, not at each row's next backoff (see docs/reliability.md)."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from ..support.fake_segment import FakeSegment
from ..support.service import wait_for
from ..support.webhooks import contact_of, distinct_webhooks, post_concurrently
from .conftest import StartService, service_env, states, status

PROBE_SECONDS = 2.0  # how often an open circuit lets a probe through
FAILURES_TO_OPEN = 3
OUTAGE = 5.0


def test_backlog_resumes_within_seconds_after_an_outage(
        start_service: StartService, segment: FakeSegment, database_url: str) -> None:
    # The default backoff (2 s doubling): after the outage each row's own next attempt is
    # many seconds away; the circuit's probe brings them all back at once.
    segment.fail_always(503)
    service = start_service(service_env(database_url, segment, WEB_CONCURRENCY=2,
                                        DELIVERY_BACKOFF_SECONDS=2,
                                        DELIVERY_BACKOFF_MAX_SECONDS=900))
    bodies = distinct_webhooks(100)
    started = time.monotonic()
    assert {a.label for a in post_concurrently(service.url, bodies)} == {"200 accepted"}
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
    assert states(service) == {"pending": 100}, "nothing delivered or dead during the outage"
    failed_posts = segment.requests
    segment.recover()
    recovered = time.monotonic()
    assert wait_for(lambda: len(segment.messages) >= 1, PROBE_SECONDS + 3), service.log()
    contacts = {contact_of(body) for body in bodies}
    # Each row's own next attempt is up to 8 s away by now: a probe is not.
    assert wait_for(lambda: contacts <= set(segment.by_anonymous_id()), PROBE_SECONDS + 4)
    assert time.monotonic() - recovered <= PROBE_SECONDS + 4
    assert wait_for(lambda: states(service) == {"delivered": 100}, 5), states(service)
    # Two workers, each: the posts that opened its circuit, then a probe every 2 s.
    assert failed_posts <= 2 * (FAILURES_TO_OPEN + OUTAGE / PROBE_SECONDS + 2), failed_posts


def test_a_circuit_opened_before_a_restart_closes_once_the_backlog_is_delivered(
        start_service: StartService, tmp_path: Path, segment: FakeSegment) -> None:
    # The process that saw Segment fail is gone (a crash during the outage); the next one
    # delivers the backlog: no surface may still say the circuit is open. (A short lease:
    # the crashed process's claims end soon.)
    env = service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                      DELIVERY_LEASE_SECONDS=3)
    segment.fail_always(503)
    service = start_service(env)
    post_concurrently(service.url, distinct_webhooks(6))
    assert wait_for(lambda: status(service)["open_circuits"] != [], 15), service.log()
    service.kill()
    segment.recover()
    restarted = start_service(env, name="restarted")
    assert wait_for(lambda: states(restarted) == {"delivered": 6}, 15), states(restarted)
    assert wait_for(lambda: status(restarted)["open_circuits"] == [], 5)
    ready = requests.get(restarted.url + "/readyz", timeout=5).json()
    assert ready["checks"]["circuits"]["open"] == 0
    metrics = requests.get(restarted.url + "/metrics", timeout=5).text
    assert 'drift_segment_source_open_circuits{destination="segment"} 0.0' in metrics
