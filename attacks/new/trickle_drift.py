"""A Drift API that trickles its answers holds lookups far past DRIFT_TIMEOUT_SECONDS; eight
such conversations take every lookup slot, and every other row that needs a lookup waits
for them, however fast Drift answers its own conversation.

requests' `timeout` bounds each socket read, not the whole answer. The fake Drift answers
GET /conversations/1..8 one byte every 0.5 s over `--trickle` seconds and
GET /conversations/99 at once. Posted: 8 participant events for conversations 1..8, then one
for conversation 99 (all without contactId, so each needs its conversation), then 5
new_conversation webhooks (no lookup). The delivery loop runs (run_forever) for `--observe`
seconds with DRIFT_TIMEOUT_SECONDS=2: no lookup should outlive 2 x 2 + 1 s.

    .venv/bin/python attacks/new/trickle_drift.py [--trickle 30 --observe 40]
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
        parser.add_argument("--trickle", type=float, default=30.0)
        parser.add_argument("--observe", type=float, default=40.0)
    args = common.arguments(__doc__, extra)

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        conversation = path.split("?")[0].rsplit("/", 1)[-1]
        data = json.dumps({"data": {"id": int(conversation),
                                    "contactId": 46_400_000_000 + int(conversation)}}).encode()
        return 200, data, (0.0 if conversation == "99" else args.trickle)

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-new-trickle-drift-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                DRIFT_TIMEOUT_SECONDS=2,
                                                DELIVERY_LOOKUP_WAIT_SECONDS=0.25))
    now_ms = int(time.time() * 1000)
    for conversation in [*range(1, 9), 99]:
        svc.post(webhook("conversation_participant_added", {
            "conversationId": conversation, "addedParticipants": [2322756],
            "changedAt": now_ms}))
    for n in range(5):
        svc.post(webhook("new_conversation", {"id": 8_400_000 + n,
                                              "contactId": 46_400_100_000 + n,
                                              "createdAt": now_ms}))
    started = time.time()
    thread = threading.Thread(target=svc.delivery.run_forever, daemon=True)
    thread.start()

    def first_seen(contact: int) -> float | None:
        times = [at for at, m in segment.messages() if m.get("anonymousId") == str(contact)]
        return round(min(times) - started, 2) if times else None

    deadline = time.monotonic() + args.observe
    while time.monotonic() < deadline and first_seen(46_400_000_099) is None:
        time.sleep(0.25)
    conv99_at = first_seen(46_400_000_099)
    no_lookup = [first_seen(46_400_100_000 + n) for n in range(5)]
    asked_99 = [round(at - started, 2) for at, _, path, _ in drift.requests
                if path.endswith("/conversations/99")]
    lookups_ended = [round(at - started, 2) for at, path, _ in drift.finished
                     if not path.endswith("/99")]
    svc.delivery.stop()
    thread.join(timeout=10)
    stored = common.rows(url)
    row99 = next(r for r in stored if r["id"] == 9)
    report = {
        "posted": 14, "answered": dict(Counter(svc.answers)),
        "DRIFT_TIMEOUT_SECONDS": 2, "longest_a_lookup_should_take": 5,
        "no_lookup_rows_delivered_at_seconds": no_lookup,
        "conversation_99_first_requested_at_seconds": asked_99[:1],
        "conversation_99_row_delivered_at_seconds": conv99_at,
        "trickled_lookups_ended_at_seconds": sorted(lookups_ended)[:1] + sorted(lookups_ended)[-1:],
        "row_99_state_attempts_error": [row99["state"], row99["attempts"], row99["last_error"]],
        "stored": common.harness.states(stored),
    }
    report["bug"] = conv99_at is None or conv99_at > 6
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
