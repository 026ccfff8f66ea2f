"""Nothing is sent twice: a Drift event keeps its messageId and its dedupe key over every
way it can come again (redelivery, replay, ``backfill``) for longer than it can come
again; a genuinely new event is never taken for an old one; a slow Segment answer never
makes two loops post the same rows (see docs/reliability.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import run_command, wait_for
from ..support.webhooks import (
    ORG,
    SECRET,
    headers,
    new_conversation,
    post,
    since,
    stringify,
    webhook,
)
from .conftest import StartService, service_env, states

DAY = 86_400.0


def now_ms(offset_days: float = 0.0) -> int:
    """Epoch milliseconds, ``offset_days`` from now."""
    return int((time.time() + offset_days * DAY) * 1000)


def sent_to(segment: FakeSegment, contact: int, event: str = "") -> list[dict[str, Any]]:
    """The messages Segment accepted for one contact (of one event, when named)."""
    return [message for message in segment.by_anonymous_id().get(str(contact), [])
            if message.get("event", "").endswith(event)]


def backfill(env: dict[str, str], days: float) -> dict[str, int]:
    """``backfill --since`` ``days`` ago for ORG; its counts."""
    done = run_command(env, "backfill", "--since", since(days), "--org-id", str(ORG))
    assert done.returncode == 0, done.stderr + done.stdout
    counts: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def test_an_event_delivered_and_pruned_is_not_sent_again_by_redelivery_or_backfill(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # Delivered rows are kept RETENTION_DAYS (here a second); their dedupe keys far longer.
    env = service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment, drift,
                      RETENTION_DAYS=1 / DAY, RETENTION_INTERVAL_SECONDS=1)
    service = start_service(env)
    replayed = new_conversation(46_000_000_001)["data"] | {"createdAt": now_ms(-1)}
    backfilled = new_conversation(46_000_000_002)["data"] | {"createdAt": now_ms(-1),
                                                            "updatedAt": now_ms(-1)}
    slot = now_ms(2)
    meeting = {"eventId": "evt-7000003", "schedulerId": 46_000_000_003, "agentId": 2322756,
               "orgId": ORG, "status": "ACTIVE", "meetingSource": "chat",
               "scheduledAt": now_ms(-1), "updatedAt": now_ms(-1), "slotStart": slot,
               "slotEnd": slot + 1_800_000}
    for body in (webhook("new_conversation", replayed), webhook("new_conversation", backfilled),
                 webhook("new_meeting", meeting)):
        assert post(service.url, body).label == "200 accepted"
    assert wait_for(lambda: states(service) == {"delivered": 3}, 15), states(service)
    time.sleep(1.1)
    # Retention counts from the newest event the store has seen: one arrives a second later.
    assert post(service.url, new_conversation(46_000_000_004)).label == "200 accepted"
    assert wait_for(lambda: states(service) == {"delivered": 4}, 15), states(service)
    service.stop()
    service = start_service(env, name="restarted")  # its first prune, a second after start
    assert wait_for(lambda: states(service) == {"delivered": 1}, 15), states(service)

    assert post(service.url, webhook("new_conversation", replayed)).word in (
        "duplicate", "beyond_dedupe_horizon")
    # Backfill finds the conversation again, and the meeting since moved to another slot.
    drift.listed = [backfilled]
    drift.meetings = [meeting | {"slotStart": slot + 86_400_000,
                                 "slotEnd": slot + 86_400_000 + 1_800_000,
                                 "scheduledAt": now_ms(-0.01), "updatedAt": now_ms(-0.01)}]
    counts = backfill(env, 9)
    assert counts.get("accepted", 0) == 0, counts
    time.sleep(1.0)  # a round or two: anything accepted would be on its way
    for contact in (46_000_000_001, 46_000_000_002, 46_000_000_003):
        assert len(sent_to(segment, contact)) == 1, sent_to(segment, contact)


def test_genuine_repeats_without_an_event_time_are_never_answered_duplicate(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # An agent added, removed and added again; a conversation closed, reopened and closed.
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        drift))
    added = {"conversationId": 7_000_004, "contactId": 46_000_000_004,
             "addedParticipants": [2322756]}
    removed = {"conversationId": 7_000_004, "contactId": 46_000_000_004,
               "removedParticipants": [2322756]}
    push = {"conversationId": 7_000_005, "contactId": 46_000_000_005, "createdAt": now_ms(),
            "inboxId": 642330, "status": "closed", "source": "conversation_manual_push",
            "updatedAt": now_ms(1 / 24)}
    answers = []
    for body in (webhook("conversation_participant_added", added),
                 webhook("conversation_participant_removed", removed),
                 webhook("conversation_participant_added", added),
                 webhook("conversation_push", push),
                 webhook("conversation_push", push | {"updatedAt": now_ms(4 / 24)})):
        answers.append(post(service.url, body).label)
        time.sleep(0.05)
    assert answers == ["200 accepted"] * 5
    assert wait_for(lambda: states(service) == {"delivered": 5}, 15), states(service)
    assert len(sent_to(segment, 46_000_000_004, "participant_added")) == 2
    assert len(sent_to(segment, 46_000_000_005)) == 2


def test_a_change_made_back_and_forth_is_never_answered_duplicate(
        start_service: StartService, segment: FakeSegment, database_url: str) -> None:
    # An email a -> b, b -> a, a -> b without a time of its own; a meeting moved X -> Y -> X
    # without updatedAt: the third of each is new, and Segment must end where Drift is.
    service = start_service(service_env(database_url, segment))
    contact, scheduler = 46_100_000_001, 46_100_000_002
    changes = [("a@example.com", "b@example.com"), ("b@example.com", "a@example.com"),
               ("a@example.com", "b@example.com")]
    slot_x, slot_y = now_ms(1), now_ms(2)
    meeting = {"eventId": "evt-flip-1", "schedulerId": scheduler, "agentId": 2322756,
               "orgId": ORG, "eventType": "rescheduled", "scheduledAt": now_ms(-1)}
    for n, ((previous, updated), slot) in enumerate(zip(changes, (slot_x, slot_y, slot_x),
                                                        strict=True)):
        answer = post(service.url, webhook("contact_updated", {"endUserId": contact, "diff": [
            {"name": "attributes.email", "previous": previous, "updated": updated}]}))
        assert answer.label == "200 accepted", (n, answer)
        answer = post(service.url, webhook("meeting_updated", meeting | {
            "slotStart": slot, "slotEnd": slot + 1_800_000}))
        assert answer.label == "200 accepted", (n, answer)
        assert wait_for(lambda n=n: len(sent_to(segment, contact)) == n + 1
                        and len(sent_to(segment, scheduler)) == n + 1, 15)
    assert sent_to(segment, contact)[-1]["traits"]["email"] == "b@example.com"
    assert sent_to(segment, scheduler)[-1]["properties"]["slotStart"] == slot_x


def test_a_meeting_booked_before_the_dedupe_horizon_is_refused_not_sent_again(
        start_service: StartService, segment: FakeSegment, drift: FakeDrift,
        database_url: str) -> None:
    # A meeting booked 100 days ago is delivered; its dedupe key is then pruned (here
    # DEDUPE_RETENTION_DAYS is a second, so the horizon is now and its one day of margin for
    # clocks that disagree reaches into tomorrow). Rescheduled since, it comes again with a
    # newer updatedAt (two days ahead, past that margin): a meeting is as old as its booking,
    # so it is refused, as is the untouched one, never sent as a new booking.
    env = service_env(database_url, segment, drift, DEDUPE_RETENTION_DAYS=1 / DAY,
                      RETENTION_INTERVAL_SECONDS=1)
    booked = now_ms(-100)
    rescheduled = {"eventId": "evt-horizon-1", "schedulerId": 46_600_000_001,
                   "agentId": 2322756, "orgId": ORG, "status": "ACTIVE",
                   "scheduledAt": booked, "updatedAt": booked,
                   "slotStart": booked + 5 * 86_400_000,
                   "slotEnd": booked + 5 * 86_400_000 + 1_800_000}
    untouched = rescheduled | {"eventId": "evt-horizon-2", "schedulerId": 46_600_000_002}
    live = start_service(env, name="live")
    for meeting in (rescheduled, untouched):
        assert post(live.url, webhook("new_meeting", meeting)).label == "200 accepted"
    assert wait_for(lambda: states(live) == {"delivered": 2}, 15), states(live)
    time.sleep(1.1)
    # Retention counts from the newest event the store has seen: one arrives a second later.
    assert post(live.url, webhook("new_conversation", {
        "id": 46_600_000_009, "contactId": 46_600_000_009,
        "createdAt": now_ms(0)})).label == "200 accepted"
    assert wait_for(lambda: states(live) == {"delivered": 3}, 15), states(live)
    live.stop()

    announcing = start_service(env, name="announcing")  # its first prune sets the horizon

    def horizon_announced() -> bool:
        # A new process reads the horizon afresh: backfill refuses a window before it.
        done = run_command(env, "backfill", "--since", since(0.5), "--org-id", str(ORG))
        return done.returncode != 0 and "dedupe keys kept" in done.stderr

    assert wait_for(horizon_announced, 20, step=0.2), announcing.log()
    announcing.stop()
    later = start_service(env, name="later")  # a next prune (of either) forgets the old keys
    assert wait_for(lambda: "pruned dedupe keys" in announcing.log_text() + later.log_text(),
                    15), later.log()

    moved = rescheduled | {"updatedAt": now_ms(2), "slotStart": now_ms(3),
                           "slotEnd": now_ms(3) + 1_800_000}
    for meeting in (moved, untouched):
        answer = post(later.url, webhook("new_meeting", meeting))
        assert answer.label == "400 beyond_dedupe_horizon", answer
    drift.meetings = [moved, untouched]
    done = run_command(env, "backfill", "--since", since(-1.5), "--until", since(-3),
                       "--org-id", str(ORG))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "accepted" not in json.loads(done.stdout.strip().splitlines()[-1])
    time.sleep(1.0)  # a round or two: anything accepted would be on its way
    assert len(sent_to(segment, 46_600_000_001)) == 1
    assert len(sent_to(segment, 46_600_000_002)) == 1


def test_a_trickling_segment_answer_never_outlives_the_lease(
        start_service: StartService, segment: FakeSegment, database_url: str) -> None:
    # Segment's first answer comes one byte every half second for 12 s: under every read
    # timeout, far over SEGMENT_TIMEOUT_SECONDS (1.5) and the lease (4.5). Two workers.
    lease = 4.5
    service = start_service(service_env(database_url, segment, WEB_CONCURRENCY=2,
                                        DELIVERY_LEASE_SECONDS=lease,
                                        SEGMENT_TIMEOUT_SECONDS=1.5))
    segment.trickle_next(1, 12)
    posted = time.monotonic()
    for n in range(20):
        assert post(service.url, new_conversation(46_300_000_000 + n)).label == "200 accepted"
    # The rows are delivered (by a later post) within the lease, while the first answer is
    # still trickling: the round gave up on it in time.
    assert wait_for(lambda: states(service) == {"delivered": 20}, lease + 4), states(service)
    delivered_after = time.monotonic() - posted
    assert delivered_after < 12
    # Sent again only under the same messageIds, which Segment drops: never new ones.
    assert len(segment.message_id_counts()) == 20


def test_a_contact_create_answered_late_is_found_not_created_twice(
        start_service: StartService, tmp_path: Path, segment: FakeSegment) -> None:
    # Drift applies a POST /contacts but answers after DRIFT_TIMEOUT_SECONDS: the retry
    # finds the contact by externalId and updates it. (A timeline event answered late is
    # posted again: Drift takes no idempotency key; see docs/segment-to-drift.md.)
    with FakeDrift() as drift:
        drift.slow_calls["POST /contacts"] = [1.5]
        service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                            segment, drift, SEGMENT_SHARED_SECRET=SECRET,
                                            DRIFT_TIMEOUT_SECONDS=1,
                                            DELIVERY_LOOKUP_WAIT_SECONDS=0.5))
        message = {"type": "identify", "userId": "new-user-2", "messageId": "m-ident-2",
                   "traits": {"email": "two@example.com", "name": "Two"}}
        body = stringify(message)
        answer = post(service.url, body, path="/webhooks/segment", headers=headers(body))
        assert answer.label == "200 accepted"
        assert wait_for(lambda: states(service) == {"delivered": 1}, 20), states(service)
        assert [contact["attributes"]["externalId"] for contact in drift.contacts.values()] \
            == ["new-user-2"]
