"""A circuit breaker recorded open stays open in /readyz, /status and /metrics forever once the
process that opened it is gone (restart, deploy, crash during an outage).

breakers.py keeps breakers in memory and writes only their changes to the store
(Store.set_breaker: a row on open, deleted on close). A new process starts with every
breaker closed; when the destination answers, Breakers.succeeded() returns early for a
breaker that was never open in THIS process (probe_at is None), so on_change(key, None)
never runs and the stored "open since ..." row is never deleted. With two workers on one
database the same happens when worker A opened it and worker B delivers the backlog.

Steps: Segment answers 503; loop 1 opens the Segment breaker; loop 1 "dies" (a new
Delivery, as after a restart); Segment recovers; loop 2 delivers every row. Then /readyz.

    .venv/bin/python attacks/new/i911_stale_breaker.py
"""
from __future__ import annotations

import time

import common
from common import webhook


def main() -> None:
    args = common.arguments(__doc__)
    segment = common.harness.FakeSegment()
    drift = common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-i911-stale-breaker-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url))
    from drift_segment_source.app import make_delivery
    now_ms = int(time.time() * 1000)
    for i in range(6):
        svc.post(webhook("new_conversation", {"id": 6_000_000 + i, "contactId": 47_000 + i,
                                              "createdAt": now_ms}))
    segment.fail_next = 10_000
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not svc.store.open_breakers():
        svc.delivery.run_round()
        time.sleep(0.05)
    opened = dict(svc.store.open_breakers())
    # Restart: a new process's delivery loop. Segment is back.
    segment.fail_next = 0
    second = make_delivery(svc.app)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        second.run_round()
        if all(r["state"] == "delivered" for r in common.rows(url)):
            break
        time.sleep(0.3)
    for _ in range(3):
        second.run_round()
    ready = svc.client.get("/readyz").get_json()
    metrics_text = svc.client.get("/metrics").get_data(as_text=True)
    gauge = [line for line in metrics_text.splitlines()
             if "open_circuits" in line and not line.startswith("#")]
    report = {
        "opened_by_loop_1": list(opened),
        "delivered_by_loop_2": sum(r["state"] == "delivered" for r in common.rows(url)),
        "segment_messages": len(segment.messages()),
        "open_breakers_after_recovery": list(svc.store.open_breakers()),
        "readyz_circuits": ready["checks"].get("circuits"),
        "metrics_breaker_lines": gauge,
        "bug": bool(svc.store.open_breakers()),
    }
    segment.close()
    drift.close()
    common.finish(report)


if __name__ == "__main__":
    main()
