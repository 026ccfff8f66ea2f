"""Drift API circuit open, yet the lookup queue keeps calling it, and an unrelated healthy
Drift write (Segment -> Drift, its own breaker) waits behind the doomed calls.

breakers.py/loop.py check the org's Drift breaker only when a lookup is *enqueued*
(Delivery.start_lookup -> Breakers.allows). One round claims up to DELIVERY_BATCH_SIZE
rows and enqueues a lookup for each before any has failed; lookups.py then runs the FIFO
queue 8 at a time and never looks at the breaker again. So after the breaker opens every
queued call still goes to the hung API (each costing DRIFT_TIMEOUT, twice for GETs), and
a Segment -> Drift timeline write queued after them (org 0's breaker, healthy endpoint)
waits for all of them. Promised: rows that need no lookup never wait behind rows that do
(docs/reliability.md#failure-stays-with-its-row), and an open circuit stops spending
attempts (docs/reliability.md#circuit-breakers).

Fake Drift: GET /conversations/* hangs 20 s; POST /contacts/timeline answers at once.
DRIFT_TIMEOUT_SECONDS=1. 120 participant webhooks (120 distinct conversations), then 1
Segment track.

    .venv/bin/python attacks/new/i911_lookup_queue_open_breaker.py [--webhooks 120]
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import common
from common import webhook

SECRET = "i911-shared-secret"


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--webhooks", type=int,
                                                              default=120))
    lock = threading.Lock()
    conversation_gets: list[float] = []
    timeline_at: list[float] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if path.startswith("/conversations/"):
            with lock:
                conversation_gets.append(time.time())
            time.sleep(20)
            return 200, b'{"data":{"id":1,"contactId":5}}', 0.0
        if path == "/contacts/timeline":
            with lock:
                timeline_at.append(time.time())
        return 200, b'{"data":{}}', 0.0

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-i911-lookup-queue-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_SHARED_SECRET=SECRET, DRIFT_TIMEOUT_SECONDS=1))
    now_ms = int(time.time() * 1000)
    for i in range(args.webhooks):
        svc.post(webhook("conversation_participant_added", {
            "conversationId": 8_000_000 + i, "addedParticipants": [1], "changedAt": now_ms}))
    body = json.dumps({"type": "track", "userId": "healthy-user", "event": "Paid",
                       "messageId": "i911-q-1", "timestamp": "2024-05-01T10:00:00Z"}).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    svc.client.post("/webhooks/segment", data=body, content_type="application/json",
                    headers={"X-Signature": signature})
    start = time.time()
    opened_at = None
    breaker = f"drift:{common.ORG}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not timeline_at:
        svc.delivery.run_round()
        svc.delivery.make_due_after_lookups()
        if opened_at is None and svc.delivery.breakers.is_open(breaker):
            opened_at = time.time()
        time.sleep(0.2)
    with lock:
        after_open = sum(1 for t in conversation_gets if opened_at and t > opened_at + 0.05)
        total_gets = len(conversation_gets)
    report = {
        "webhooks_needing_lookup": args.webhooks,
        "breaker_opened_after_s": None if opened_at is None else round(opened_at - start, 1),
        "conversation_GETs_total": total_gets,
        "conversation_GETs_after_breaker_open": after_open,
        "segment_to_drift_timeline_write_after_s":
            round(timeline_at[0] - start, 1) if timeline_at else "not within 120 s",
        "bug": after_open > 8 or not timeline_at or timeline_at[0] - start > 5,
    }
    svc.delivery.stop()
    segment.close()
    common.finish(report)


if __name__ == "__main__":
    main()
