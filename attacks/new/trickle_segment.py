"""A Segment (or proxy) that trickles its answer holds a post far past SEGMENT_TIMEOUT_SECONDS:
the round outlives its lease, another loop claims the same rows and sends them again.

requests' `timeout` bounds each socket read, not the whole answer; the Segment library's
`post` passes SEGMENT_TIMEOUT_SECONDS as that per-read timeout. This fake Segment answers the
FIRST batch one byte every 0.5 s over `--trickle` seconds (never silent for longer than the
timeout), and every later batch at once.

Loop A (owner A) claims 20 rows and posts them; after the lease (DELIVERY_LEASE_SECONDS=--lease)
loop B (a second worker on PostgreSQL, or the SQLite singleton taken over when A stopped
renewing it) claims the same rows and posts them; A's post then completes with 200 too.
The bug shows when loop A's round outlives its lease (two loops own the same rows at once),
rows are re-sent under new messageIds, or rows end undelivered. A re-send under the SAME
messageIds after A gave up on its post in time is at-least-once delivery, not the bug
(`message_ids_sent_twice` still counts it).

    .venv/bin/python attacks/new/trickle_segment.py [--lease 6 --timeout 2 --trickle 15]
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import common
from common import webhook


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--lease", type=float, default=6.0)
        parser.add_argument("--timeout", type=float, default=2.0)
        parser.add_argument("--trickle", type=float, default=15.0)
    args = common.arguments(__doc__, extra)
    first = [True]
    received: list[dict[str, Any]] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        received.extend(json.loads(body)["batch"])
        trickle = args.trickle if first[0] else 0.0
        first[0] = False
        return 200, b'{"success":true}', trickle

    segment = common.TrickleServer(plan)
    drift = common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-trickle-seg-")
    settings = common.base_settings(url, segment.url, drift.url,
                                    DELIVERY_LEASE_SECONDS=args.lease,
                                    SEGMENT_TIMEOUT_SECONDS=args.timeout)
    svc = common.InProcess(settings)
    from drift_segment_source.app import make_delivery
    loop_b = make_delivery(svc.app)
    now_ms = int(time.time() * 1000)
    for n in range(20):
        svc.post(webhook("new_conversation", {"id": 8_300_000 + n,
                                              "contactId": 46_300_000_000 + n,
                                              "createdAt": now_ms}))
    timing: dict[str, float] = {}

    def run_a() -> None:
        started = time.monotonic()
        svc.delivery.run_round()
        timing["a_round_seconds"] = round(time.monotonic() - started, 2)

    thread = threading.Thread(target=run_a, daemon=True)
    thread.start()
    time.sleep(args.lease + 1)
    timing["b_claimed"] = loop_b.run_round()
    thread.join(timeout=args.trickle + 30)
    ids = Counter(message["messageId"] for message in received)
    stored = common.rows(url)
    report = {
        "posted": 20, "answered": dict(Counter(svc.answers)),
        "settings": {"DELIVERY_LEASE_SECONDS": args.lease,
                     "SEGMENT_TIMEOUT_SECONDS": args.timeout,
                     "round_deadline_seconds": args.lease / 3},
        "loop_a_round_seconds": timing.get("a_round_seconds", "still running"),
        "loop_b_claimed_same_rows": timing["b_claimed"],
        "stored": common.harness.states(stored),
        "messages_at_segment": len(received), "distinct_message_ids": len(ids),
        "message_ids_sent_twice": sum(1 for c in ids.values() if c > 1),
    }
    # A post the round gave up on has an unknown outcome: sending its rows again later under
    # the SAME messageIds is at-least-once delivery (Segment drops the copy), not this bug.
    # The bug is a round that outlives its lease, so that two loops own the same rows at once
    # (and the late one records over the other), or rows left undelivered.
    a_seconds = timing.get("a_round_seconds")
    report["loop_a_outlived_its_lease"] = not isinstance(a_seconds, float) or a_seconds > args.lease
    report["resent_under_new_message_ids"] = max(0, len(ids) - 20)
    report["bug"] = (report["loop_a_outlived_its_lease"]
                     or report["resent_under_new_message_ids"] > 0
                     or common.harness.states(stored) != {"delivered": 20})
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
