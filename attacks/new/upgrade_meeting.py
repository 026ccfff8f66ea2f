"""Upgrading a running database (migration 0002) double-sends every meeting booked before the
upgrade: a backfill after the upgrade stores it again and sends it under a NEW messageId.

The fix round changed new_meeting's identity (eventId instead of eventId + contact + slot +
scheduledAt). Migration 0002 copies the OLD dedupe keys of existing rows into dedupe_keys,
but the new code computes a different key (and messageId) for the same Drift event, so the
copied keys never match. A meeting booked live yesterday on the old code, backfilled today
after the upgrade WITHOUT any change to the meeting, is accepted and reaches Segment as a
second new_meeting with a different messageId (Segment cannot drop it). The same holds for
every type whose identity changed (participant events and pushes without their own time),
and for rows sent but not yet recorded when the old process stopped.

The old code is the commit before the fixes (0160895), extracted with `git archive` into a
temporary folder (the repository is not touched).

    .venv/bin/python attacks/new/upgrade_meeting.py [--old-commit 0160895]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime

import common
from common import DAY, ORG, TOKEN, webhook

OLD_SIDE = textwrap.dedent(r'''
    import json, sys
    old, url, segment_url, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    sys.path.insert(0, old)
    import drift_segment_source
    assert drift_segment_source.__file__.startswith(old), drift_segment_source.__file__
    from drift_segment_source import create_app
    from drift_segment_source.app import make_delivery
    app = create_app({"DATABASE_URL": url, "DRIFT_VERIFICATION_TOKEN": "TOKEN_PLACEHOLDER",
                      "SEGMENT_WRITE_KEY": "attack-write-key-0123456789",
                      "SEGMENT_HOST": segment_url, "LOG_LEVEL": "CRITICAL"})
    app.extensions["store"].migrate()
    answer = app.test_client().post("/webhooks/drift", data=body,
        content_type="application/json", headers={"X-Verification-Token": "TOKEN_PLACEHOLDER"})
    delivery = make_delivery(app)
    for _ in range(5):
        if delivery.run_round() == 0:
            break
    print(json.dumps({"answer": answer.get_json()}))
''').replace("TOKEN_PLACEHOLDER", TOKEN)


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--old-commit",
                                                               default="0160895"))
    old = tempfile.mkdtemp(prefix="dss-new-old-code-")
    archive = subprocess.run(["git", "-C", str(common.HERE.parent.parent), "archive",
                              args.old_commit,
                              "drift_segment_source"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-upgrade-")
    now = time.time()
    meeting = {"eventId": "evt-upgrade-1", "schedulerId": 46_800_000_001, "agentId": 2322756,
               "orgId": ORG, "status": "ACTIVE", "meetingSource": "chat",
               "scheduledAt": int((now - DAY) * 1000), "updatedAt": int((now - DAY) * 1000),
               "slotStart": int((now - 3600) * 1000), "slotEnd": int((now - 1800) * 1000)}
    done = subprocess.run([sys.executable, "-c", OLD_SIDE, old, url, segment.url,
                           json.dumps(webhook("new_meeting", meeting))],
                          capture_output=True, text=True, timeout=120, cwd=old)
    old_answer = json.loads(done.stdout.strip().splitlines()[-1])["answer"]
    before_upgrade = [m["messageId"] for _, m in segment.messages()]

    # The upgrade: the new code migrates the same database (0002 copies the keys).
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url))
    from sqlalchemy import text
    with svc.store.engine.connect() as connection:
        copied = connection.execute(text("SELECT count(*) FROM dedupe_keys")).scalar()
    from click.testing import CliRunner

    from drift_segment_source.cli import main as cli
    drift.meetings = [meeting]  # the same booking, unchanged
    since = datetime.fromtimestamp(now - 2 * DAY, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    env = {"DATABASE_URL": url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
           "DRIFT_ACCESS_TOKEN": common.harness.DRIFT_TOKEN, "DRIFT_API_URL": drift.url,
           "SEGMENT_WRITE_KEY": common.harness.WRITE_KEY, "SEGMENT_HOST": segment.url,
           "LOG_LEVEL": "CRITICAL"}
    result = CliRunner().invoke(cli, ["backfill", "--since", since, "--org-id", str(ORG)],
                                env=env, catch_exceptions=True)
    svc.deliver()
    messages = [m for _, m in segment.messages() if m.get("event", "").endswith("new_meeting")]
    report = {
        "old_code": args.old_commit, "live_answer_on_old_code": old_answer,
        "message_ids_before_upgrade": before_upgrade,
        "dedupe_keys_copied_by_migration_0002": copied,
        "backfill_after_upgrade": (result.output or "").strip().splitlines()[-1:],
        "new_meeting_messages_for_one_booking": len(messages),
        "distinct_message_ids": sorted({m["messageId"] for m in messages}),
    }
    report["bug"] = len({m["messageId"] for m in messages}) > 1
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
