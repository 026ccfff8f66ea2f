"""Surrogates: a lone UTF-16 surrogate escape in one webhook of a group commit.

480 distinct ``new_conversation`` webhooks from 24 keep-alive connections at once; one in
six carries ``"\\ud83d"`` (a truncated emoji, written as the JSON escape in the raw body) in
an unused field. Every webhook is a different Drift event, so any ``duplicate`` answer is a
lie unless that event is stored; every ``accepted`` one must reach Segment.

    python attacks/surrogates.py --checkout PATH [--count 480 --connections 24 --every 6]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Sent, marker, webhook  # noqa: E402

SURROGATE = "\ud83d"  # json.dumps writes it as the 6-character escape \ud83d


def bodies(count: int, every: int) -> list[Sent]:
    sent = []
    for n in range(count):
        contact = 41_000_000_000 + n
        data = {"id": 3_000_000 + n, "contactId": contact, "createdAt": 1714419312425 + n,
                "updatedAt": 1714419312425 + n, "status": "open", "inboxId": 642330,
                "attackId": marker(f"s{n}")}
        group = "good"
        if n % every == every - 1:
            data["conversationTags"] = [{"color": "red", "name": "Hot lead " + SURROGATE}]
            group = "lone_surrogate"
        sent.append(Sent(f"s{n}", str(contact), webhook("new_conversation", data), group))
    return sent


def main() -> None:
    args = harness.arguments(__doc__, lambda parser: (
        parser.add_argument("--count", type=int, default=480),
        parser.add_argument("--connections", type=int, default=24),
        parser.add_argument("--every", type=int, default=6),
        parser.add_argument("--wait", type=float, default=30.0,
                            help="seconds to wait for the accepted webhooks to be delivered")))
    run = harness.Run(args)
    try:
        run.service.start()
        sent = bodies(args.count, args.every)
        raw = sent[args.every - 1].body
        assert b"\\ud83d" in harness.encode(raw), "the raw body must carry the escape"
        started = time.monotonic()
        answers = harness.post_concurrently(run.service.url, [item.body for item in sent],
                                            args.connections)
        post_seconds = round(time.monotonic() - started, 2)
        for item, answer in zip(sent, answers, strict=True):
            item.answer = answer
        accepted = {item.contact for item in sent if item.answer and
                    item.answer.label == "200 accepted"}
        harness.wait_until(lambda: accepted <= set(harness.delivered_ids(run.segment)),
                           args.wait)
        time.sleep(1.0)  # a last round in flight
        rows = run.db.rows()
        report = {"finding": "surrogates", "checkout": args.checkout,
                  **harness.tally(sent, rows, run.segment)}
        log = run.service.log_text()
        report["extra"] = {
            "with_surrogate": sum(1 for item in sent if item.group == "lone_surrogate"),
            "post_seconds": post_seconds,
            "log_errors": harness.error_lines(log),
        }
        report["bug"] = bool(report["lost"] or report["duplicate_but_not_stored"]
                             or report["five_xx"])
    finally:
        run.close()
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
