"""App mode: one org's Segment host hanging (not refusing) slows every other org's delivery,
breaker open or not.

Delivery.send_to (delivery/loop.py) posts destinations one after another in the same round,
synchronously. A hung host costs SEGMENT_TIMEOUT_SECONDS per post. The breaker opens after
3 such posts, but then lets one probe through every PROBE_SECONDS (2 s, breakers.py), and
the probe is a synchronous post inside the round too: every round in which the hung org's
rows are due again waits the whole timeout before (or after) the healthy org's batch. With
the defaults (SEGMENT_TIMEOUT 15 s, probe every 2 s) a healthy org gets about one round per
15 s. Promised: a circuit breaker stops spending attempts on a destination that is down
(docs/reliability.md#circuit-breakers), and other rows are neither delayed nor
dead-lettered by it (docs/reliability.md#failure-stays-with-its-row).

Org A (region eu -> SEGMENT_EU_HOST: a server that never answers in time), org B (region
us -> a healthy fake Segment). one webhook of each org every 0.5 s for 30 s;
SEGMENT_TIMEOUT_SECONDS=3, DELIVERY_BATCH_SIZE=20. Measured: org B's receipt-to-delivery
latency, against a control run where A's host answers too.
--burst: a backlog of 60 each instead of a flow.

    .venv/bin/python attacks/new/i911_hung_segment_region_starves.py
"""
from __future__ import annotations

import time

import common
from common import webhook

ORG_A, ORG_B = 7_300_001, 7_300_002
FLOW = 30.0


def run(args, hang: bool) -> dict:
    segment = common.harness.FakeSegment()

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if hang:
            time.sleep(30)
        return 200, b'{"success":true}', 0.0

    eu = common.TrickleServer(plan)
    drift = common.harness.FakeDrift()
    url = common.sqlite_url("dss-i911-hung-region-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_WRITE_KEY=None, DRIFT_ACCESS_TOKEN=None,
        SEGMENT_EU_HOST=eu.url, DRIFT_CLIENT_ID="client-id", DRIFT_CLIENT_SECRET="secret",
        SECRET_KEY="attack-secret-key-attack-secret-key", SEGMENT_TIMEOUT_SECONDS=3,
        DELIVERY_BATCH_SIZE=20, DELIVERY_BACKOFF_SECONDS=1, DELIVERY_BACKOFF_MAX_SECONDS=5))
    from drift_segment_source.app_mode.oauth_client import TokenGrant
    directory = svc.app.extensions["routing"].directory
    for org, region in ((ORG_A, "eu"), (ORG_B, "us")):
        directory.save_tokens(org, TokenGrant(f"t-{org}", f"r-{org}", 7200.0, org))
        directory.save_write_key(org, common.harness.WRITE_KEY + str(org), region)
    # A steady flow: one webhook of each org every 0.5 s for FLOW seconds, delivery rounds
    # run in between (as the in-process loop would).
    if args.burst:  # a backlog instead: 60 of each, A's first in every pair
        now_ms = int(time.time() * 1000)
        for i in range(60):
            for org in (ORG_A, ORG_B):
                svc.post(webhook("new_conversation", {"id": org * 1000 + i,
                                                      "contactId": 50_000 + i,
                                                      "createdAt": now_ms}, org_id=org))
    start = time.monotonic()
    posted = 60 if args.burst else 0
    while time.monotonic() - start < FLOW + 20:
        elapsed = time.monotonic() - start
        if not args.burst and elapsed < FLOW and posted < elapsed / 0.5:
            now_ms = int(time.time() * 1000)
            for org in (ORG_A, ORG_B):
                svc.post(webhook("new_conversation", {"id": org * 1000 + posted,
                                                      "contactId": 50_000 + posted,
                                                      "createdAt": now_ms}, org_id=org))
            posted += 1
        svc.delivery.make_due_after_lookups()
        svc.delivery.run_round()
        time.sleep(0.05)
        if args.burst or time.monotonic() - start > FLOW:
            b_rows = [r for r in common.rows(url) if r["org_id"] == ORG_B]
            if all(r["state"] == "delivered" for r in b_rows):
                break
    b_rows = [r for r in common.rows(url) if r["org_id"] == ORG_B]
    waits = sorted((r["finished_at"] - r["received_at"]) for r in b_rows
                   if r["state"] == "delivered")
    out = {"org_B_posted": len(b_rows), "org_B_delivered": len(waits),
           "org_B_latency_p50_s": round(waits[len(waits) // 2], 2) if waits else None,
           "org_B_latency_max_s": round(waits[-1], 2) if waits else None,
           "org_A_posts_to_hung_host": len(eu.requests)}
    segment.close()
    drift.close()
    return out


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument('--burst', action='store_true'))
    control = run(args, hang=False)
    attacked = run(args, hang=True)
    p50 = attacked["org_B_latency_p50_s"]
    report = {"control_A_healthy": control, "A_hung": attacked,
              "bug": p50 is None or p50 > max(2.0, 5 * (control["org_B_latency_p50_s"] or 0.1))}
    common.finish(report)


if __name__ == "__main__":
    main()
