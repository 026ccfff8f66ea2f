"""App mode: a post made beside the round (send_beside) outlives its rows' lease; the same
loop claims the rows again and posts them while the first post is still in flight.

Delivery.post_isolating bounds each post with ``self._lease_ends - time.monotonic()``, and
``_lease_ends`` is an attribute of the loop that every run_round overwrites with ITS start +
0.8 x lease. A beside thread (its destination's circuit was open when the round began) keeps
posting after the round returned: its probe, then the rest of its batches up to the round's
deadline (1/3 lease). Each later round moves ``_lease_ends`` on, so a batch the beside
thread starts near that deadline may run until deadline + 0.8 lease = 1.13 lease after its
rows were claimed: past their lease. The loop's next round then claims the same rows again
(their lease is over) and posts them a second time while the first post is still open
(promised: no row is delivered by two loops at the same time, and a round ends well inside
its lease: docs/reliability.md#leases-and-scale-out); with Postgres another worker does so.
When the first post finally times out, the beside thread marks the host hung (its circuit
reopens though it answers) and records 'parked' for rows it no longer owns.

Org A (region eu -> a TrickleServer), org B (us -> FakeSegment). DELIVERY_LEASE_SECONDS=15.
A answers 503 until its circuit opens; then the probe trickles 200 over 4 s, the next
request (A's other rows) trickles over 14 s, later ones answer at once. Rounds run every
0.3 s with a new row of org B in each (so A's rows go beside).

    .venv/bin/python attacks/new/i912_beside_outlives_lease.py
"""
from __future__ import annotations

import json
import time

import common
from common import webhook

ORG_A, ORG_B = 7_400_001, 7_400_002
LEASE = 15.0


def main() -> None:
    common.arguments(__doc__)
    state = {"mode": "fail", "served": 0}

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if state["mode"] == "fail":
            return 503, b'{"error":"down"}', 0.0
        state["served"] += 1
        trickle = {1: 4.0, 2: 14.0}.get(state["served"], 0.0)
        return 200, b'{"success":true}', trickle

    eu = common.TrickleServer(plan, interval=0.5)
    segment = common.harness.FakeSegment()
    drift = common.harness.FakeDrift()
    url = common.sqlite_url("dss-i912-beside-lease-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_WRITE_KEY=None, DRIFT_ACCESS_TOKEN=None,
        SEGMENT_EU_HOST=eu.url, DRIFT_CLIENT_ID="client-id", DRIFT_CLIENT_SECRET="secret",
        SECRET_KEY="attack-secret-key-attack-secret-key", SEGMENT_TIMEOUT_SECONDS=3,
        DELIVERY_LEASE_SECONDS=LEASE, DELIVERY_BATCH_SIZE=50))
    from drift_segment_source.app_mode.oauth_client import TokenGrant
    directory = svc.app.extensions["routing"].directory
    for org, region in ((ORG_A, "eu"), (ORG_B, "us")):
        directory.save_tokens(org, TokenGrant(f"t-{org}", f"r-{org}", 7200.0, org))
        directory.save_write_key(org, common.harness.WRITE_KEY + str(org), region)
    serial = [0]

    def post(org: int) -> None:
        serial[0] += 1
        svc.post(webhook("new_conversation", {"id": org * 1000 + serial[0],
                                              "contactId": 60_000 + serial[0],
                                              "createdAt": int(time.time() * 1000)},
                         org_id=org))

    for _ in range(4):
        post(ORG_A)
    post(ORG_B)
    until = time.monotonic() + 20
    while time.monotonic() < until and not svc.store.open_breakers():
        svc.delivery.run_round()
        time.sleep(0.05)
    opened = list(svc.store.open_breakers())
    time.sleep(2.2)  # the probe is due, and every parked row of A with it
    state["mode"] = "trickle"
    claims: dict[int, list[float]] = {}
    calls: list[dict] = []
    real_post = svc.delivery.transport.post
    t0 = time.time()

    def watched(write_key: str, host: str, batch: list) -> None:
        entry = {"host": host, "start": round(time.time() - t0, 2), "end": None,
                 "ids": {m.get("messageId") for m in batch}, "outcome": "?"}
        calls.append(entry)
        try:
            real_post(write_key, host, batch)
            entry["outcome"] = "2xx"
        except Exception as error:
            entry["outcome"] = type(error).__name__
            raise
        finally:
            entry["end"] = round(time.time() - t0, 2)

    svc.delivery.transport.post = watched
    records: list = []
    real_record = svc.delivery.record
    real_claim = svc.store.claim

    def record(outcomes) -> None:
        import threading
        records.append([round(time.time() - t0, 2), threading.current_thread().name,
                        len(outcomes.delivered), len(outcomes.parked)])
        real_record(outcomes)

    def claim(owner, limit, lease):
        got = real_claim(owner, limit, lease)
        if any(r.org_id == ORG_A for r in got):
            records.append([round(time.time() - t0, 2), "claim",
                            sorted(r.id for r in got if r.org_id == ORG_A)])
        return got

    svc.delivery.record = record
    svc.store.claim = claim
    start = time.monotonic()
    until = start + 26
    while time.monotonic() < until:
        post(ORG_B)
        svc.delivery.run_round()
        for row in common.rows(url):
            if row["org_id"] == ORG_A and row.get("lease_expires_at"):
                seen = claims.setdefault(row["id"], [])
                if row["lease_expires_at"] not in seen:
                    seen.append(row["lease_expires_at"])
        time.sleep(0.3)
    svc.delivery.wait_beside(5)
    # Posts of A's messages after the circuit opened: (start, end, messageIds).
    posts = []
    ends = sorted(eu.finished)
    for received, _method, _path, body in eu.requests:
        try:
            batch = json.loads(body).get("batch", [])
        except ValueError:
            continue
        ids = {m.get("messageId") for m in batch}
        end = next((f[0] for f in ends if f[0] >= received), None)
        posts.append({"start": round(received - eu.requests[0][0], 2),
                      "end": None if end is None else round(end - eu.requests[0][0], 2),
                      "ids": ids})
    # Client side (the transport's own calls): the server sees a request only once read.
    trickled = [c for c in calls if c["host"] == eu.url and c["ids"]]
    overlap = []
    for i, first in enumerate(trickled):
        for second in trickled[i + 1:]:
            both = first["ids"] & second["ids"]
            if both and (first["end"] is None or second["start"] < first["end"]):
                overlap.append({"first": [first["start"], first["end"]],
                                "second": [second["start"], second["end"]],
                                "same_message_ids": len(both)})
    a_rows = [r for r in common.rows(url) if r["org_id"] == ORG_A]
    report = {
        "opened": opened,
        "requests_to_A": len(eu.requests),
        "A_rows_claimed_more_than_once_while_trickling": sum(len(v) > 1 for v in claims.values()),
        "same_rows_posted_concurrently": overlap,
        "A_states": sorted({r["state"] for r in a_rows}),
        "open_breakers_at_end": list(svc.store.open_breakers()),
        "posts": [[p["start"], p["end"], len(p["ids"])] for p in posts],
        "calls_A": [[c["start"], c["end"], len(c["ids"]), c["outcome"]] for c in calls
                    if c["host"] == eu.url],
        "lease_expiries_A": {k: [round(x - t0, 2) for x in v] for k, v in claims.items()},
        "records": [r for r in records if r[1] != "MainThread" or r[3]],
        "bug": bool(overlap),
    }
    eu.close()
    segment.close()
    drift.close()
    common.finish(report)


if __name__ == "__main__":
    main()
