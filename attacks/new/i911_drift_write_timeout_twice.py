"""Segment -> Drift: a Drift write that succeeded but answered after DRIFT_TIMEOUT_SECONDS is
written again.

Drift's POST /contacts/timeline has no idempotency key. delivery/loop.py prepare_for_drift
runs DriftWrites.apply; a read timeout becomes DriftApiError(None, retryable=True)
(drift_api.py _request), the row is retried, and apply() posts the same timeline event
again. The fake Drift records the event on receipt (as a real server does once the request
is read) and answers the FIRST timeline POST 1.5 s later (DRIFT_TIMEOUT_SECONDS=1).

Control (held up): POST /contacts answered late the same way; the retry first looks the
user up by externalId (find), sees the contact and PATCHes: one contact. With
--lagging-search the fake's externalId search sees a new contact only 3 s after its
creation (eventual consistency): then the retry creates a second contact (suspicion: how
Drift's search and duplicate-email handling behave is not documented).

    .venv/bin/python attacks/new/i911_drift_write_timeout_twice.py [--lagging-search]
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import common

SECRET = "i911-shared-secret"


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--lagging-search",
                                                              action="store_true"))
    lock = threading.Lock()
    timeline: list[dict] = []
    contacts: list[tuple[float, dict]] = []
    calls: list[str] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        with lock:
            calls.append(f"{method} {path.split('?')[0]}")
        if method == "POST" and path == "/contacts/timeline":
            with lock:
                timeline.append(json.loads(body))
                first = len(timeline) == 1
            if first:
                time.sleep(1.5)
            return 200, b'{"data":{}}', 0.0
        if method == "POST" and path == "/contacts":
            with lock:
                contacts.append((time.time(), json.loads(body)))
                first = len(contacts) == 1
                new_id = 900 + len(contacts)
            if first:
                time.sleep(1.5)
            return 200, json.dumps({"data": {"id": new_id}}).encode(), 0.0
        if method == "GET" and path.startswith("/contacts?"):
            lag = 3.0 if args.lagging_search else 0.0
            with lock:
                visible = [c for t, c in contacts if time.time() - t >= lag]
            if not visible:
                return 200, b'{"data":[]}', 0.0
            ext = visible[0]["attributes"]["externalId"]
            return 200, json.dumps({"data": [{"id": 901, "attributes": {
                "externalId": ext}}]}).encode(), 0.0
        return 200, b'{"data":{}}', 0.0

    drift = common.TrickleServer(plan)
    drift.server.RequestHandlerClass.do_PATCH = drift.server.RequestHandlerClass._any
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-i911-write-twice-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_SHARED_SECRET=SECRET, DRIFT_TIMEOUT_SECONDS=1,
        DELIVERY_LOOKUP_WAIT_SECONDS=0.5))

    def send(message: dict) -> dict:
        body = json.dumps(message).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        return svc.client.post("/webhooks/segment", data=body, content_type="application/json",
                               headers={"X-Signature": signature}).get_json()

    answers = [
        send({"type": "track", "userId": "user-1", "event": "Order Completed",
              "messageId": "m-track-1", "timestamp": "2024-05-01T10:00:00Z"}),
        send({"type": "identify", "userId": "new-user-2", "messageId": "m-ident-2",
              "traits": {"email": "two@example.com", "name": "Two"}}),
    ]
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        svc.deliver(rounds=3)
        states = [r["state"] for r in common.rows(url)]
        if states and all(s in ("delivered", "dead") for s in states):
            break
        time.sleep(0.3)
    events = [(e.get("externalId"), e.get("event"), e.get("createdAt")) for e in timeline]
    report = {
        "answers": [a.get("status") for a in answers],
        "states": {r["event_type"]: r["state"] for r in common.rows(url)},
        "timeline_posts_for_one_track": len(timeline),
        "distinct_timeline_events": len(set(events)),
        "contacts_created_for_one_identify": len(contacts),
        "drift_calls": calls,
        "bug": len(timeline) > 1 or len(contacts) > 1,
    }
    drift.close()
    segment.close()
    common.finish(report)


if __name__ == "__main__":
    main()
