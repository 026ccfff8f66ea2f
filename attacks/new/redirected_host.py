"""A SEGMENT_HOST that redirects (e.g. nginx's `return 301 https://...` for plain http, or a
moved collector) makes rows count as delivered although no batch was ever uploaded.

segment_out treats 3xx as retryable ("the host is a redirector or misconfigured proxy; the
rows wait for the fix"), but the library's request.post uses a requests Session, which
FOLLOWS redirects itself; for 301/302/303 it turns the POST into a GET without the body. The
GET's answer is what the library judges: 2xx -> success -> the rows are marked delivered
though nothing was uploaded; 405/404 -> a non-retryable SegmentError -> dead letters.

Host A answers every POST /v1/batch with `--status` (301) and Location: host B. Host B is a
Segment-compatible collector: it records POSTed batches and answers GET with `--get-status`
(200: e.g. a proxy's catch-all page; try 405).

    .venv/bin/python attacks/new/redirected_host.py [--status 301] [--get-status 200|405]
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import common
from common import webhook


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--status", type=int, default=301)
        parser.add_argument("--get-status", type=int, default=200)
    args = common.arguments(__doc__, extra)
    uploaded: list[dict[str, Any]] = []

    def collector(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if method == "POST":
            uploaded.extend(json.loads(body).get("batch", []))
            return 200, b'{"success":true}', 0.0
        return args.get_status, b"<html>ok</html>", 0.0

    host_b = common.TrickleServer(collector)

    def redirector(method: str, path: str, body: bytes) -> tuple[int, bytes, float, bytes]:
        return args.status, b"", 0.0, f"Location: {host_b.url}{path}\r\n".encode()

    host_a = common.TrickleServer(redirector)
    drift = common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-redirect-")
    svc = common.InProcess(common.base_settings(url, host_a.url, drift.url))
    now_ms = int(time.time() * 1000)
    for n in range(10):
        svc.post(webhook("new_conversation", {"id": 9_400_000 + n, "contactId": 47_400_000_000 + n,
                                              "createdAt": now_ms}))
    svc.deliver()
    stored = common.rows(url)
    report = {
        "posted": 10, "answered": dict(Counter(svc.answers)),
        "host_a_answers": args.status,
        "host_b_requests": Counter(m for _, m, _, _ in host_b.requests),
        "messages_uploaded_to_collector": len(uploaded),
        "stored": common.harness.states(stored),
        "reasons": sorted({r["last_error"] for r in stored if r["last_error"]}),
    }
    marked_but_not_uploaded = sum(1 for r in stored if r["state"] == "delivered") - len(uploaded)
    report["marked_delivered_but_never_uploaded"] = max(0, marked_but_not_uploaded)
    report["lost"] = report["marked_delivered_but_never_uploaded"] + sum(
        1 for r in stored if r["state"] == "dead")
    report["bug"] = report["lost"] > 0
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
