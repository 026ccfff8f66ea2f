"""One message Segment refuses (400) dead-letters its whole batch when the refusal comes
back after SIGTERM or after the round's deadline.

post_isolating() splits a 400/413 batch to find the message at fault, but split() gives up
when the loop is stopping or the round is past its deadline and files the 400 against
EVERY row of the batch: Outcomes.file() sees a non-retryable SegmentError(400) and
dead-letters them all.

Variant "sigterm": 50 good new_conversation webhooks + 1 that this Segment refuses are
claimed in one round; Segment takes 1.5 s to answer the batch (400); 0.5 s into the post
the loop is told to stop (what gunicorn's worker_exit does on SIGTERM: Delivery.stop()).
Variant "deadline": the same, no stop, but DELIVERY_LEASE_SECONDS=9 (deadline 3 s) and
Segment answers after 3.5 s (with the default 60 s lease the same happens to a batch whose
post starts late in the round, e.g. the second send after lookups).

    .venv/bin/python attacks/new/refused_under_pressure.py [--variant sigterm|deadline]
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import common
from common import webhook

BAD = "<<refused-by-segment>>"


class PickySegment:
    """Answers 400 to any batch holding BAD, 200 otherwise, after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: list[dict[str, Any]] = []
        self.answers: list[int] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(fake.delay)
                batch = json.loads(body)["batch"]
                status = 400 if BAD.encode() in body else 200
                fake.answers.append(status)
                if status == 200:
                    fake.received.extend(batch)
                payload = json.dumps({"success": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = common.harness._QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument(
        "--variant", choices=["sigterm", "deadline"], default="sigterm"))
    delay = 1.5 if args.variant == "sigterm" else 3.5
    segment = PickySegment(delay)
    drift = common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-refused-")
    extra = {} if args.variant == "sigterm" else {"DELIVERY_LEASE_SECONDS": 9}
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url, **extra))
    now_ms = int(time.time() * 1000)
    for n in range(50):
        svc.post(webhook("new_conversation", {"id": 8_100_000 + n, "contactId": 46_200_000_000 + n,
                                              "createdAt": now_ms, "status": "open"}))
    svc.post(webhook("new_conversation", {"id": 8_199_999, "contactId": 46_299_999_999,
                                          "createdAt": now_ms, "status": BAD}))
    if args.variant == "sigterm":
        threading.Timer(0.5, svc.delivery.stop).start()
    started = time.monotonic()
    svc.delivery.run_round()
    round_seconds = round(time.monotonic() - started, 2)
    stored = common.rows(url)
    dead_good = [r for r in stored if r["state"] == "dead" and r["id"] <= 50]
    reasons = sorted({r["last_error"] for r in stored if r["state"] == "dead"})
    report = {"variant": args.variant, "posted": 51, "answered": dict(
        __import__("collections").Counter(svc.answers)),
        "segment_answers": segment.answers, "round_seconds": round_seconds,
        "stored": common.harness.states(stored),
        "good_rows_dead_lettered": len(dead_good), "dead_reasons": reasons,
        "delivered_messages": len(segment.received)}
    report["lost"] = len(dead_good)
    report["bug"] = len(dead_good) > 0
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
