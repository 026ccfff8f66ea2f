"""Dedupe holes: in-process with a fake clock.

The app is built with ``create_app({..., "CLOCK": ...})`` from the checkout's package on a
temporary SQLite file; delivery rounds run in-process (``make_delivery(app).run_round()``)
against a loopback fake Segment; backfill runs through the real CLI command
(``drift-segment-source backfill --since ...``) against a loopback fake Drift API.

(a) Two conversations arrive live 8.5 days ago and are delivered. Today (after the
    retention of 7 days; delivery prunes delivered rows) one is posted again (Drift
    redelivery, or ``replay`` of a saved payload) and the other comes back through
    ``backfill --since`` 9 days ago. Each is accepted again and sent a second time with the
    same messageId, long after Segment's ~24 h dedupe window: counted twice.
(b) A meeting booked live yesterday is rescheduled; ``backfill`` reads the meeting with its
    new slotStart/scheduledAt, stores it under a new dedupe key and sends a second
    ``new_meeting`` with a new messageId.
(c) Genuinely different events that carry no time of their own: an agent added to a
    conversation, removed, and added again (``conversation_participant_added`` without
    ``changedAt``); a conversation closed, reopened and closed again (``conversation_push``
    without ``pushedAt``, different ``updatedAt``). The second of each is answered
    ``duplicate`` and never sent.

    python attacks/dedupe.py --checkout PATH
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import ORG, TOKEN, webhook  # noqa: E402

DAY = 86400.0


def main() -> None:
    args = harness.arguments(__doc__)
    sys.path.insert(0, args.checkout)
    import drift_segment_source

    if not drift_segment_source.__file__.startswith(args.checkout + os.sep):
        raise SystemExit(f"imported {drift_segment_source.__file__}, not {args.checkout}")
    from click.testing import CliRunner

    from drift_segment_source import create_app
    from drift_segment_source.app import make_delivery
    from drift_segment_source.cli import main as cli

    workdir = Path(tempfile.mkdtemp(prefix="dss-attack-dedupe-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'store.sqlite3'}"
    segment, drift = harness.FakeSegment(), harness.FakeDrift()
    real_now = float(int(time.time()))
    now = [real_now - 8.5 * DAY]
    settings = {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                "SEGMENT_WRITE_KEY": harness.WRITE_KEY, "SEGMENT_HOST": segment.url,
                "DRIFT_API_URL": drift.url, "DRIFT_ACCESS_TOKEN": harness.DRIFT_TOKEN,
                "DELIVERY_BACKOFF_SECONDS": 0.01, "DELIVERY_BACKOFF_MAX_SECONDS": 0.05,
                "LOG_LEVEL": "WARNING"}
    report: dict[str, Any] = {}
    answers: list[harness.Answer] = []
    try:
        app = create_app({**settings, "CLOCK": lambda: now[0]})
        app.extensions["store"].migrate()
        client = app.test_client()
        delivery = make_delivery(app)

        def post(body: dict[str, Any]) -> str:
            response = client.post("/webhooks/drift", data=json.dumps(body),
                                   content_type="application/json",
                                   headers={"X-Verification-Token": TOKEN})
            answer = response.get_json(silent=True) or {}
            label = f"{response.status_code} {answer.get('status') or answer.get('error')}"
            answers.append(harness.Answer(len(answers), response.status_code, label, answer,
                                          now[0]))
            return label

        def deliver() -> None:
            for _ in range(20):
                if delivery.run_round() == 0:
                    break

        def sent_to(contact: int) -> list[dict[str, Any]]:
            return [message for _, message in segment.messages()
                    if message.get("anonymousId") == str(contact)]

        def ms(epoch: float) -> int:
            return int(epoch * 1000)

        # (a) live, 8.5 days ago.
        live_at = now[0]
        replayed = {"id": 7_000_001, "contactId": 46_000_000_001, "createdAt": ms(live_at),
                    "updatedAt": ms(live_at), "status": "open", "inboxId": 642330}
        backfilled = {"id": 7_000_002, "contactId": 46_000_000_002, "createdAt": ms(live_at),
                      "updatedAt": ms(live_at), "status": "open", "inboxId": 642330}
        first = {"replayed": post(webhook("new_conversation", replayed)),
                 "backfilled": post(webhook("new_conversation", backfilled))}
        deliver()

        # (b) a meeting booked live yesterday.
        now[0] = real_now - 1 * DAY
        slot = ms(real_now + 2 * DAY)
        meeting = {"eventId": "evt-7000003", "schedulerId": 46_000_000_003, "agentId": 2322756,
                   "orgId": ORG, "status": "ACTIVE", "meetingSource": "chat",
                   "scheduledAt": ms(now[0]), "updatedAt": ms(now[0]),
                   "slotStart": slot, "slotEnd": slot + 1_800_000}
        meeting_live = post(webhook("new_meeting", meeting))
        deliver()

        # Today: delivery's periodic prune runs (retention 7 days).
        now[0] = real_now
        rows_before_prune = len(harness.Database(database_url).rows())
        pruner = getattr(delivery, "prune_now_and_then", None)
        if pruner is not None:
            delivery._last_prune = 0.0  # due now, as in a loop that has run for a while
            pruner()
            pruned_by = "Delivery.prune_now_and_then"
        else:  # a checkout that moved pruning: the store's own prune, by retention
            retention = float(app.config.get("RETENTION_DAYS", 7)) * DAY
            app.extensions["store"].prune(now[0] - retention)
            pruned_by = "Store.prune"
        rows_after_prune = len(harness.Database(database_url).rows())

        # (a1) the same webhook again (Drift redelivery or `replay` of a saved payload).
        again = post(webhook("new_conversation", replayed))
        # (a2) + (b): backfill --since 9 days ago; the meeting was rescheduled meanwhile.
        rescheduled = {**meeting, "slotStart": slot + int(DAY) * 1000,
                       "slotEnd": slot + int(DAY) * 1000 + 1_800_000,
                       "scheduledAt": ms(real_now - 600), "updatedAt": ms(real_now - 600)}
        drift.listed = [backfilled]
        drift.meetings = [rescheduled]
        environment = {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                       "DRIFT_ACCESS_TOKEN": harness.DRIFT_TOKEN, "DRIFT_API_URL": drift.url,
                       "SEGMENT_WRITE_KEY": harness.WRITE_KEY, "SEGMENT_HOST": segment.url,
                       "LOG_LEVEL": "WARNING"}
        since = datetime.fromtimestamp(real_now - 9 * DAY, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        result = CliRunner().invoke(cli, ["backfill", "--since", since, "--org-id", str(ORG)],
                                    env=environment, catch_exceptions=True)
        backfill_output = (result.output or "").strip().splitlines()[-1:] or [""]
        deliver()

        # (c) events with no time of their own, hours apart.
        now[0] = real_now + 3600
        added = {"conversationId": 7_000_004, "contactId": 46_000_000_004,
                 "addedParticipants": [2322756]}
        removed = {"conversationId": 7_000_004, "contactId": 46_000_000_004,
                   "removedParticipants": [2322756]}
        participant = [post(webhook("conversation_participant_added", added))]
        now[0] += 3600
        participant.append(post(webhook("conversation_participant_removed", removed)))
        now[0] += 3600
        participant.append(post(webhook("conversation_participant_added", added)))
        push = {"conversationId": 7_000_005, "contactId": 46_000_000_005,
                "createdAt": ms(real_now), "inboxId": 642330, "status": "closed",
                "source": "conversation_manual_push", "updatedAt": ms(real_now + 3600)}
        pushes = [post(webhook("conversation_push", push))]
        now[0] += 3600
        pushes.append(post(webhook("conversation_push", {**push,
                                                         "updatedAt": ms(real_now + 4 * 3600)})))
        deliver()

        rows = harness.Database(database_url).rows()
        ids = harness.message_id_counts(segment)

        def copies(contact: int) -> dict[str, Any]:
            messages = sent_to(contact)
            per_id: dict[str, int] = {}
            for message in messages:
                per_id[message["messageId"]] = per_id.get(message["messageId"], 0) + 1
            return {"messages": len(messages), "distinct_message_ids": len(per_id),
                    "max_copies_of_one_id": max(per_id.values(), default=0)}

        a_replay, a_backfill = copies(46_000_000_001), copies(46_000_000_002)
        b_meeting = [m for m in sent_to(46_000_000_003) if m.get("event", "").endswith(
            "new_meeting")]
        c_added = [m for m in sent_to(46_000_000_004)
                   if m.get("event", "").endswith("participant_added")]
        c_push = sent_to(46_000_000_005)
        double_sends = (a_replay["max_copies_of_one_id"] > 1) + (
            a_backfill["max_copies_of_one_id"] > 1)
        extra = {
            "a_retention_horizon": {
                "live_answers": first, "pruned_by": pruned_by,
                "rows_before_prune": rows_before_prune,
                "rows_after_prune": rows_after_prune,
                "reposted_after_8_5_days": again, "replayed_sent": a_replay,
                "backfill_exit_code": result.exit_code, "backfill_output": backfill_output[0],
                "backfilled_sent": a_backfill,
                "message_ids_sent_twice": double_sends},
            "b_rescheduled_meeting": {
                "live": meeting_live, "new_meeting_messages": len(b_meeting),
                "distinct_message_ids": len({m["messageId"] for m in b_meeting})},
            "c_no_event_time": {
                "participant_added_removed_added": participant,
                "participant_added_messages": len(c_added),
                "push_closed_twice": pushes, "push_messages": len(c_push)},
        }
        lost = sum(1 for label in participant + pushes if label == "200 duplicate")
        report = {
            "finding": "dedupe holes", "checkout": args.checkout,
            "posted": len(answers), "answered": harness.answered(answers),
            "backfilled": backfill_output[0],
            "stored": harness.states(rows),
            "delivered": {"distinct_message_ids": len(ids), "messages": sum(ids.values())},
            "duplicates_sent": sum(1 for count in ids.values() if count > 1),
            "lost": lost,
            "extra": extra,
        }
        report["bug"] = bool(double_sends or len({m["messageId"] for m in b_meeting}) > 1
                             or lost)
        app.extensions["store"].close()
    finally:
        segment.close()
        drift.close()
        if args.keep:
            print(f"kept: {workdir}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
