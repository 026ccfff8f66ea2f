"""Self-hosted, DRIFT_ACCESS_TOKEN revoked: Drift answers 401 to every lookup. drift_api.py
raises TokenRejected(401, retryable=True); loop.py Delivery.reporting counts it as the
Drift API being down, the org's breaker opens, and every row that needs a lookup is parked
"waiting for the Drift API: it is not answering (circuit open)" -- spending no attempt,
probing every 2 s for ever, until DELIVERY_MAX_AGE_HOURS (72 h) dead-letters them. The
reason shown is false (Drift answers, promptly) and nothing says the token is the
problem. Promised: without a usable token, events are held with a clear reason
(docs/reliability.md#held-rows).

    .venv/bin/python attacks/new/i911_revoked_token_parked.py
"""
from __future__ import annotations

import time

import common
from common import webhook


def main() -> None:
    args = common.arguments(__doc__)
    calls: list[float] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        calls.append(time.time())
        return 401, b'{"error":{"message":"invalid_token"}}', 0.0

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-i911-revoked-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                DELIVERY_LOOKUP_WAIT_SECONDS=1))
    now_ms = int(time.time() * 1000)
    for i in range(5):
        svc.post(webhook("conversation_participant_added", {
            "conversationId": 9_100_000 + i, "addedParticipants": [1], "changedAt": now_ms}))
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        svc.delivery.make_due_after_lookups()
        svc.delivery.run_round()
        time.sleep(0.2)
    stored = common.rows(url)
    report = {"drift_calls_in_12_s": len(calls),
              "states": sorted({r["state"] for r in stored}),
              "reasons": sorted({str(r["last_error"]) for r in stored}),
              "hold_reasons": sorted({str(r.get("hold_reason")) for r in stored}),
              "attempts": [r["attempts"] for r in stored],
              "open_breakers": list(svc.store.open_breakers())}
    report["bug"] = (all(r["state"] == "pending" for r in stored)
                     and not any("401" in x or "token" in x.lower() for x in report["reasons"]))
    drift.close()
    segment.close()
    common.finish(report)


if __name__ == "__main__":
    main()
