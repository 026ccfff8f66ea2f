"""A Segment batch body costs time quadratic in its message count: every message re-scans the
whole body.

take_batch -> checked(body, message) -> check_carriable(body, message)
(sources/drift/envelope.py) runs body.count(b"{") + body.count(b"[") and
SURROGATE_ESCAPE.search(body) over the WHOLE request body once per message: N messages x
1 MiB. Segment's Webhooks destination waits 10 s and retries for 4 h; each retry costs the
same again (the scans run before dedupe). The request only needs a signature of its
first element (see i911_forged_batch_tail.py), so one captured signed message lets anyone
burn a web thread for tens of seconds per request.

    .venv/bin/python attacks/new/i911_segment_batch_quadratic.py [--messages 4000 12000]
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import common

SECRET = "i911-shared-secret"


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument(
        "--messages", type=int, nargs="+", default=[1000, 4000, 12000]))
    segment = common.harness.FakeSegment()
    drift = common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-i911-quadratic-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                SEGMENT_SHARED_SECRET=SECRET))
    runs = []
    for count in args.messages:
        # Same body size (just under 1 MiB) for every count: only the message count varies.
        pad = max(0, (1_000_000 // count) - 75)
        messages = [{"type": "track", "userId": f"u{i}", "event": "E" + "x" * pad,
                     "messageId": f"q{count}-{i}"} for i in range(count)]
        body = json.dumps(messages, separators=(",", ":")).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        started = time.monotonic()
        answer = svc.client.post("/webhooks/segment", data=body,
                                 content_type="application/json",
                                 headers={"X-Signature": signature})
        seconds = time.monotonic() - started
        runs.append({"messages": count, "body_bytes": len(body),
                     "status": answer.status_code, "seconds": round(seconds, 2),
                     "ms_per_message": round(1000 * seconds / count, 3)})
    segment.close()
    drift.close()
    slowest = max(run["seconds"] for run in runs)
    common.finish({"runs": runs, "segment_timeout_s": 10,
                   "bug": slowest > 10
                   or runs[-1]["ms_per_message"] > 3 * runs[0]["ms_per_message"]})


if __name__ == "__main__":
    main()
