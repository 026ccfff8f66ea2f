"""A burst of 1,000 Segment events through the real endpoint (HTTP, threads) and the real
delivery loop into a fake Drift that answers 429 to every 7th call.

Counts what happened and keeps the figures in ``test-artifacts/segment_burst_<db>.json``:
accepted, duplicates (Segment retrying), delivered, retried, dead-lettered (tracks of users
Drift never gets), and that Drift got every write exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY
from sqlalchemy import text

from drift_segment_source.app import make_delivery

from ..support.fake_drift import FakeDrift
from ..support.webhooks import DRIFT_TOKEN, SECRET, headers, received, stringify
from .conftest import ROOT, AppFactory
from .live_server import serving

pytestmark = pytest.mark.slow  # a measurement: about 40 s per database

USERS = 200
UNKNOWN_USERS = 50
BATCH = 50


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(token=DRIFT_TOKEN) as fake:
        yield fake


def burst() -> list[dict[str, Any]]:
    """1,000 distinct Segment calls: identifies that create 200 users, their tracks, pages
    and groups (often before the identify gets there), and 50 tracks of users Drift never
    gets."""
    messages: list[dict[str, Any]] = []
    for n in range(USERS):
        messages.append({"type": "identify", "messageId": f"identify-{n}", "userId": f"u-{n}",
                         "traits": {"email": f"user{n}@example.com", "plan": "pro",
                                    "address": {"city": "Lyon"}},
                         "timestamp": "2024-04-29T19:35:12.996Z"})
    for n in range(500):
        messages.append({"type": "track", "messageId": f"track-{n}", "userId": f"u-{n % USERS}",
                         "event": f"Burst Event {n}", "timestamp": "2024-04-29T19:40:00.123Z"})
    for n in range(150):
        messages.append({"type": "page", "messageId": f"page-{n}", "userId": f"u-{n % USERS}",
                         "name": f"Burst Page {n}", "timestamp": "2024-04-29T19:41:00.000Z"})
    for n in range(100):
        messages.append({"type": "group", "messageId": f"group-{n}", "userId": f"u-{n}",
                         "groupId": f"org-{n % 10}", "traits": {"name": f"Company {n % 10}"}})
    for n in range(UNKNOWN_USERS):
        messages.append({"type": "track", "messageId": f"lost-{n}", "userId": f"nobody-{n}",
                         "event": f"Lost Event {n}", "timestamp": "2024-04-29T19:40:00.123Z"})
    # Interleaved, as traffic is: most tracks of a user reach the service before or with
    # the identify that creates the user in Drift.
    return sorted(messages, key=lambda message: zlib.crc32(message["messageId"].encode()))


def post_all(url: str, messages: list[dict[str, Any]]) -> Counter[str]:
    """Half one message per request from 16 connections, half in signed batches (Actions
    batching); the answers by status, one per message."""
    single, batched = messages[: len(messages) // 2], messages[len(messages) // 2:]
    # Segment sets receivedAt; a batch signed over its first element needs a recent one.
    batched = [{**message, "receivedAt": received()} for message in batched]
    requests_to_send = [stringify(message) for message in single] + [
        stringify(batched[i:i + BATCH]) for i in range(0, len(batched), BATCH)]

    def send(body: bytes) -> list[str]:
        first = stringify(json.loads(body)[0]) if body.startswith(b"[") else body
        answer = requests.post(url + "/webhooks/segment", data=body, headers=headers(first),
                               timeout=30)
        reply = answer.json()
        if reply.get("status") == "batch":
            return [result["status"] for result in reply["results"]]
        return [reply.get("status") or reply.get("error", "?")]

    answers: Counter[str] = Counter()
    with ThreadPoolExecutor(16) as pool:
        for statuses in pool.map(send, requests_to_send):
            answers.update(statuses)
    return answers


def save_report(name: str, report: dict[str, Any]) -> None:
    """Keep the figures as a test artefact (test-artifacts/<name>.json) and print them."""
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(report, sort_keys=True)}")


def delivered(store: Any) -> int:
    return sum(number for (_, state), number in store.counts().items() if state == "delivered")


def metric(outcome: str) -> float:
    return REGISTRY.get_sample_value("drift_segment_source_deliveries_total",
                                     {"outcome": outcome}) or 0.0


def test_a_burst_of_1000_segment_events_with_429s_is_delivered_once_each(
        make_app: AppFactory, drift: FakeDrift, database_url: str) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                   DELIVERY_LOOKUP_WAIT_SECONDS=0.25, DELIVERY_POLL_SECONDS=0.05,
                   DELIVERY_BACKOFF_SECONDS=0.2, DELIVERY_BACKOFF_MAX_SECONDS=2,
                   SEGMENT_UNKNOWN_USER_RETRY_MINUTES=0.5)
    drift.fail_every(7, 429, retry_after="1")
    messages = burst()
    retried_before, dead_before = metric("retried"), metric("dead")
    delivery = make_delivery(app)
    loop = threading.Thread(target=delivery.run_forever, daemon=True)
    started = time.monotonic()
    with serving(app) as url:
        loop.start()
        try:
            answers = post_all(url, messages)
            # Segment retries what it did not see answered: 100 messages come again.
            again = post_all(url, messages[:100])
            store = app.extensions["store"]
            deadline = time.monotonic() + 240  # generous: a busy CI machine is slower
            deliverable_at = None
            while store.backlog()[0] and time.monotonic() < deadline:
                if deliverable_at is None and delivered(store) == 1000 - UNKNOWN_USERS:
                    deliverable_at = time.monotonic() - started
                time.sleep(0.2)
            drained = time.monotonic() - started
        finally:
            delivery.stop()
            delivery.wakeup.set()
            loop.join(30)

    with store.engine.connect() as connection:
        by_state = dict(connection.execute(text(
            "SELECT state, count(*) FROM webhooks GROUP BY state")).all())
        tried_again = connection.execute(text(
            "SELECT count(*) FROM webhooks WHERE attempts > 1")).scalar()
        reasons = Counter(reason.split(":")[0] + ": " + reason.split(": ")[1][:40]
                          for (reason,) in connection.execute(text(
                              "SELECT last_error FROM webhooks WHERE state = 'dead'")))
    events = Counter(event["event"] for event in drift.timeline)
    contacts = Counter(contact["attributes"]["externalId"]
                       for contact in drift.contacts.values())
    report = {
        "database": database_url.split(":")[0],
        "posted": len(messages),
        "answers": dict(answers),
        "reposted": 100,
        "reposted_answers": dict(again),
        "states": by_state,
        "rows_retried_at_least_once": tried_again,
        "retry_outcomes": metric("retried") - retried_before,
        "dead_lettered": metric("dead") - dead_before,
        "dead_reasons": dict(reasons),
        "drift_calls": len(drift.calls),
        "drift_429_answers": drift.failures,
        "drift_contacts_created": len(contacts),
        "drift_contacts_duplicated": sum(1 for n in contacts.values() if n > 1),
        "drift_timeline_events": sum(events.values()),
        "drift_timeline_events_written_twice": sum(1 for n in events.values() if n > 1),
        "seconds_until_every_known_user_event_delivered": round(deliverable_at or drained, 1),
        "seconds_until_the_unknown_users_dead": round(drained, 1),
    }
    save_report(f"segment_burst_{report['database']}", report)

    assert answers == {"accepted": 1000}
    assert again == {"duplicate": 100}
    assert by_state == {"delivered": 1000 - UNKNOWN_USERS, "dead": UNKNOWN_USERS}
    assert drift.failures > 0 and tried_again > 0
    assert report["drift_contacts_created"] == USERS
    assert report["drift_contacts_duplicated"] == 0
    assert report["drift_timeline_events"] == 650
    assert report["drift_timeline_events_written_twice"] == 0
    assert all(reason.startswith("Drift API 404: Drift has no contact with externalId")
               for reason in reasons)
