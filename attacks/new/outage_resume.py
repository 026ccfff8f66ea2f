"""After a Segment outage the backlog resumes at each row's own backoff (up to 15 min), not
"within seconds": there is no circuit breaker (docs/reliability.md#circuit-breakers).

In-process with a fake clock, default backoff settings (2 s doubling, 900 s ceiling):
Segment answers 503 to everything for `--outage` minutes while 50 webhooks arrive, evenly
spread over the outage (the loop runs a round every simulated second). Segment then
recovers; we keep running a round every simulated second and measure how long until the
backlog is delivered.
grep -rn "breaker\\|circuit" drift_segment_source/ finds nothing.

    .venv/bin/python attacks/new/outage_resume.py [--outage 30]
"""

from __future__ import annotations

import random

import common
from common import webhook


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--outage", type=float,
                                                               default=30.0))
    random.seed(8)
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-outage-")
    clock = common.Clock()
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url, CLOCK=clock,
                                                DELIVERY_BACKOFF_SECONDS=2.0,
                                                DELIVERY_BACKOFF_MAX_SECONDS=900.0))
    segment.fail_next = 10**9
    outage_end = clock.now + args.outage * 60
    every = args.outage * 60 / 50  # webhooks keep arriving during the outage
    next_post, posted = clock.now, 0
    while clock.now < outage_end:
        if posted < 50 and clock.now >= next_post:
            svc.post(webhook("new_conversation", {"id": 8_700_000 + posted,
                                                  "contactId": 46_700_000_000 + posted,
                                                  "createdAt": int(clock.now * 1000)}))
            posted += 1
            next_post += every
        svc.delivery.run_round()
        clock.now += 1.0
    failed_posts = len(segment.refused)
    segment.fail_next = 0
    recovered = clock.now
    delivered_at: list[float] = []
    while clock.now < recovered + 3600 and len(delivered_at) < 50:
        before = len({m["messageId"] for _, m in segment.messages()})
        svc.delivery.run_round()
        after = len({m["messageId"] for _, m in segment.messages()})
        delivered_at.extend([clock.now - recovered] * (after - before))
        clock.now += 1.0
    report = {
        "posted": 50, "answered": dict(__import__("collections").Counter(svc.answers)),
        "outage_minutes": args.outage, "failed_posts_during_outage": failed_posts,
        "delivered_after_recovery": len(delivered_at),
        "seconds_after_recovery_first": delivered_at[0] if delivered_at else None,
        "seconds_after_recovery_half": delivered_at[24] if len(delivered_at) > 24 else None,
        "seconds_after_recovery_all": delivered_at[49] if len(delivered_at) > 49 else None,
        "stored": common.harness.states(common.rows(url)),
    }
    # 0.0 is a real figure (everything went out in the first round after recovery).
    waited = report["seconds_after_recovery_all"]
    report["bug"] = waited is None or waited > 30
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
