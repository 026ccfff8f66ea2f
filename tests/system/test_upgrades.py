"""Upgrades keep every guarantee: a database used by an older release, migrated by this one,
delivers nothing twice, backfill included (see docs/operations.md)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import run_command, wait_for
from ..support.webhooks import ORG, post, since, webhook
from .conftest import StartService, service_env, states

ROOT = Path(__file__).resolve().parents[2]
# The release before the dedupe identities changed (a meeting was then identified by its
# eventId, contact, slot and booking time; now by its eventId alone).
OLD_RELEASE = "0160895"
DAY = 86_400


def old_checkout(folder: Path) -> str:
    """The old release's package, extracted from this repository's history."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_RELEASE,
                              "drift_segment_source"], capture_output=True, timeout=60)
    assert archive.returncode == 0, archive.stderr.decode()
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True,
                   timeout=60)
    return str(folder)


def test_a_meeting_delivered_before_an_upgrade_is_not_sent_again_after_it(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    env = service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment, drift)
    now = time.time()
    meeting = {"eventId": "evt-upgrade-1", "schedulerId": 46_800_000_001, "agentId": 2322756,
               "orgId": ORG, "status": "ACTIVE", "meetingSource": "chat",
               "scheduledAt": int((now - DAY) * 1000), "updatedAt": int((now - DAY) * 1000),
               "slotStart": int((now - 3600) * 1000), "slotEnd": int((now - 1800) * 1000)}
    old = start_service(env, name="old-release", checkout=old_checkout(tmp_path / "old"))
    assert post(old.url, webhook("new_meeting", meeting)).label == "200 accepted"
    assert wait_for(lambda: len(segment.messages) == 1, 15), old.log()
    assert old.stop() == 0

    migrated = run_command(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    drift.meetings = [meeting]  # the same booking, unchanged, found by a backfill
    done = run_command(env, "backfill", "--since", since(2), "--org-id", str(ORG))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "accepted" not in json.loads(done.stdout.strip().splitlines()[-1])
    new = start_service(env, name="new-release")
    assert wait_for(lambda: states(new).get("pending", 0) == 0, 10), states(new)
    assert len(segment.messages) == 1, segment.messages
