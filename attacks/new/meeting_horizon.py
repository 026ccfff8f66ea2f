"""A meeting booked before the dedupe horizon and rescheduled since is backfilled as a NEW
booking: the same new_meeting messageId reaches Segment twice, ~100 days apart.

check_horizon() asks whether the event happened before the dedupe horizon using the NEWEST of
the data's times (base.TIME_FIELDS, updatedAt included). A new_meeting's identity is its
eventId alone (stable across reschedules, by design), and its key was first seen when it
was booked. A reschedule moves updatedAt to now while the key's first_seen_at stays at the
booking; once the key is pruned (DEDUPE_RETENTION_DAYS, 90), the backfilled meeting passes
the horizon check on its fresh updatedAt and is stored and sent again. `backfill --since`
is within the horizon (3 days ago), so check_window() has no objection either; Drift's
meetings endpoint selects by slot start, not by booking time.

Control: the same story without a reschedule (updatedAt = booking time) is refused with
beyond_dedupe_horizon, as designed.

    .venv/bin/python attacks/new/meeting_horizon.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import common
from common import DAY, ORG, TOKEN, webhook


def main() -> None:
    args = common.arguments(__doc__)
    from click.testing import CliRunner

    from drift_segment_source.cli import main as cli
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-meeting-horizon-")
    real_now = float(int(time.time()))
    clock = common.Clock(real_now - 100 * DAY)
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url, CLOCK=clock))

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    booked = clock.now
    rescheduled = {"eventId": "evt-horizon-1", "schedulerId": 46_600_000_001,
                   "agentId": 2322756, "orgId": ORG, "status": "ACTIVE",
                   "scheduledAt": ms(booked), "updatedAt": ms(booked),
                   "slotStart": ms(booked + 5 * DAY), "slotEnd": ms(booked + 5 * DAY) + 1_800_000}
    untouched = {**rescheduled, "eventId": "evt-horizon-2", "schedulerId": 46_600_000_002}
    live = [svc.post(webhook("new_meeting", rescheduled))[1].get("status"),
            svc.post(webhook("new_meeting", untouched))[1].get("status")]
    svc.deliver()

    # Today: delivery's periodic prunes (announce the horizon, then delete the keys).
    for offset in (-1300.0, -650.0):
        clock.now = real_now + offset
        svc.delivery._last_prune = 0.0
        svc.delivery.prune_now_and_then()
    horizon = svc.store.dedupe_horizon()
    # Since then: the first meeting was moved (twice) and now starts yesterday; the second
    # was booked for a slot yesterday long ago and never touched.
    drift.meetings = [
        {**rescheduled, "updatedAt": ms(real_now - 2 * DAY),
         "slotStart": ms(real_now - DAY), "slotEnd": ms(real_now - DAY) + 1_800_000},
        {**untouched, "slotStart": ms(real_now - DAY), "slotEnd": ms(real_now - DAY) + 1_800_000},
    ]
    since = datetime.fromtimestamp(real_now - 3 * DAY, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    env = {"DATABASE_URL": url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
           "DRIFT_ACCESS_TOKEN": common.harness.DRIFT_TOKEN, "DRIFT_API_URL": drift.url,
           "SEGMENT_WRITE_KEY": common.harness.WRITE_KEY, "SEGMENT_HOST": segment.url,
           "LOG_LEVEL": "CRITICAL"}
    result = CliRunner().invoke(cli, ["backfill", "--since", since, "--org-id", str(ORG)],
                                env=env, catch_exceptions=True)
    clock.now = time.time() + 5  # the CLI stored the rows on the real clock
    svc.deliver()

    def sent(contact: int) -> list[dict]:
        return [m for _, m in segment.messages() if m.get("anonymousId") == str(contact)]

    first, second = sent(46_600_000_001), sent(46_600_000_002)
    report = {
        "live_answers_100_days_ago": live,
        "dedupe_horizon_days_ago": round((real_now - horizon) / DAY, 2) if horizon else None,
        "backfill_since_days_ago": 3,
        "backfill_output": (result.output or "").strip().splitlines()[-1:],
        "rescheduled_meeting": {"messages": len(first),
                                "distinct_message_ids": len({m["messageId"] for m in first}),
                                "timestamps": [m["timestamp"] for m in first]},
        "untouched_meeting_control": {"messages": len(second)},
    }
    twice = len(first) - len({m["messageId"] for m in first})
    report["message_ids_sent_twice_beyond_segment_window"] = twice
    report["bug"] = twice > 0
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
