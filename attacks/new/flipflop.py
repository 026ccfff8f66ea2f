"""A genuine repeat of an earlier change is answered `duplicate` and never sent.

contact_updated without `data.timestamp`: a contact's email changes a -> b, then b -> a,
then a -> b again (three real changes, minutes apart). The third has the same diff as the
first, so the same dedupe key: it is answered `200 duplicate` and never stored, and Segment's
profile is left at `a` while Drift says `b`.
meeting_updated without `updatedAt`: a booking is moved slot X -> Y -> X: the third event
(back to X) has the first one's identity (eventId, eventType, slotStart) and is dropped.

    .venv/bin/python attacks/new/flipflop.py
"""

from __future__ import annotations

from typing import Any

import common
from common import ORG, webhook


def main() -> None:
    args = common.arguments(__doc__)
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-flipflop-")
    clock = common.Clock()
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url, CLOCK=clock))
    contact = 46_100_000_001
    changes = [("a@example.com", "b@example.com"), ("b@example.com", "a@example.com"),
               ("a@example.com", "b@example.com")]
    contact_answers = []
    for previous, updated in changes:
        body = webhook("contact_updated", {"endUserId": contact, "orgId": ORG, "diff": [
            {"name": "attributes.email", "previous": previous, "updated": updated}]})
        status, answer = svc.post(body)
        contact_answers.append(f"{status} {answer.get('status') or answer.get('error')}")
        svc.deliver()
        clock.now += 600
    sent = [m for _, m in segment.messages() if m.get("anonymousId") == str(contact)]
    final_email = sent[-1]["traits"].get("email") if sent else None

    meeting_contact = 46_100_000_002
    slot_x, slot_y = int(clock.now * 1000) + 86_400_000, int(clock.now * 1000) + 2 * 86_400_000
    base = {"eventId": "evt-flip-1", "schedulerId": meeting_contact, "agentId": 2322756,
            "orgId": ORG, "eventType": "rescheduled",
            "scheduledAt": int(clock.now * 1000) - 86_400_000}
    meeting_answers = []
    for slot in (slot_x, slot_y, slot_x):
        status, answer = svc.post(webhook("meeting_updated", {**base, "slotStart": slot,
                                                             "slotEnd": slot + 1_800_000}))
        meeting_answers.append(f"{status} {answer.get('status') or answer.get('error')}")
        svc.deliver()
        clock.now += 600
    moves = [m for _, m in segment.messages() if m.get("anonymousId") == str(meeting_contact)]
    final_slot = moves[-1]["properties"].get("slotStart") if moves else None

    report: dict[str, Any] = {
        "contact_updated": {"posted": 3, "answered": contact_answers,
                            "messages_sent": len(sent),
                            "email_in_segment_at_end": final_email,
                            "email_in_drift_at_end": "b@example.com"},
        "meeting_updated": {"posted": 3, "answered": meeting_answers,
                            "messages_sent": len(moves),
                            "slotStart_in_segment_at_end": final_slot,
                            "slotStart_in_drift_at_end": slot_x},
        "stored": common.harness.states(common.rows(url)),
    }
    report["lost"] = sum(a.endswith("duplicate") for a in contact_answers + meeting_answers)
    report["bug"] = report["lost"] > 0
    segment.close()
    drift.close()
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
