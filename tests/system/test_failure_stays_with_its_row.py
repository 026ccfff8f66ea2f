"""Failure stays with its row: whatever one stored webhook does (a lookup that hangs or
trickles, a message Segment refuses, a Drift token that was revoked), the other rows are
neither delayed nor dead-lettered by it, and rows that need no Drift lookup never wait
behind rows that do (see docs/reliability.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import wait_for
from ..support.webhooks import (
    SECRET,
    headers,
    new_conversation,
    post,
    post_concurrently,
    stringify,
    webhook,
)
from .conftest import StartService, service_env, states, status

GRACEFUL_TIMEOUT = 25  # gunicorn's, in drift_segment_source/gunicorn_conf.py


def participant(conversation: int, org_id: int = 5000883) -> dict[str, Any]:
    """A participant event without contactId: its contact comes from its conversation."""
    return webhook("conversation_participant_added", {
        "conversationId": conversation, "addedParticipants": [77],
        "changedAt": 1714419400000 + conversation}, org_id)


def seen(segment: FakeSegment, contacts: set[str]) -> bool:
    """Whether every one of ``contacts`` reached Segment."""
    return contacts <= set(segment.by_anonymous_id())


def test_rows_without_lookups_never_wait_behind_a_hung_drift_api(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # Three lookups hang (6 s: their two tries take DRIFT_TIMEOUT_SECONDS twice, the whole
    # lease of 4 s), two workers: the 30 webhooks that need no lookup go out at once, and
    # nothing is sent twice.
    lease = 4.0
    for conversation in range(9100, 9103):
        drift.conversations[str(conversation)] = {"id": conversation,
                                                  "contactId": 44_000_000_000 + conversation}
        drift.delay[str(conversation)] = 6.0
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        drift, WEB_CONCURRENCY=2, DRIFT_TIMEOUT_SECONDS=2,
                                        DELIVERY_LEASE_SECONDS=lease))
    for conversation in range(9100, 9103):
        assert post(service.url, participant(conversation)).label == "200 accepted"
    assert wait_for(lambda: drift.in_flight > 0, 10)
    quick = {str(43_000_000_000 + n) for n in range(30)}
    posted = time.monotonic()
    answers = post_concurrently(service.url, [new_conversation(int(c)) for c in quick])
    assert {answer.label for answer in answers} == {"200 accepted"}
    assert wait_for(lambda: seen(segment, quick), 5), sorted(quick - set(
        segment.by_anonymous_id()))
    assert time.monotonic() - posted < 5
    # Let the hung lookups run out and be retried past the lease: still once each.
    time.sleep(lease + 1)
    assert max(segment.message_id_counts().values()) == 1


def test_sigterm_during_a_hung_lookup_exits_in_time_and_hands_every_row_back(
        start_service: StartService, segment: FakeSegment, drift: FakeDrift,
        database_url: str) -> None:
    # A lease of 10 minutes: a row SIGTERM did not hand back would wait that long (a row
    # sent back to wait for its lookup waits at most two DRIFT_TIMEOUT_SECONDS).
    for conversation in range(9000, 9003):
        drift.conversations[str(conversation)] = {"id": conversation,
                                                  "contactId": 77_000 + conversation}
        drift.delay[str(conversation)] = 5.0
    env = service_env(database_url, segment, drift, DRIFT_TIMEOUT_SECONDS=2,
                      DELIVERY_LEASE_SECONDS=600)
    service = start_service(env)
    for conversation in range(9000, 9003):
        assert post(service.url, participant(conversation)).label == "200 accepted"
    quick = {str(43_100_000_000 + n) for n in range(20)}
    post_concurrently(service.url, [new_conversation(int(c)) for c in quick])
    assert wait_for(lambda: drift.in_flight > 0 and seen(segment, quick), 10)
    late = {str(43_200_000_000 + n) for n in range(10)}
    post_concurrently(service.url, [new_conversation(int(c)) for c in late])
    assert service.stop() == 0, service.log()
    assert service.stop_seconds is not None and service.stop_seconds < GRACEFUL_TIMEOUT
    drift.delay.clear()
    restarted = start_service(env, name="restarted")
    assert wait_for(lambda: states(restarted) == {"delivered": 33}, 15), states(restarted)


def test_a_trickling_drift_answer_never_holds_other_lookups(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # Eight conversations answered one byte every half second for 30 s (under every read
    # timeout, far over DRIFT_TIMEOUT_SECONDS), one answered at once.
    for conversation in [*range(1, 9), 99]:
        drift.conversations[str(conversation)] = {"id": conversation,
                                                  "contactId": 46_400_000_000 + conversation}
        if conversation != 99:
            drift.trickle[str(conversation)] = 30.0
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        drift, DRIFT_TIMEOUT_SECONDS=2,
                                        DELIVERY_LOOKUP_WAIT_SECONDS=0.25))
    for conversation in [*range(1, 9), 99]:
        assert post(service.url, participant(conversation)).label == "200 accepted"
    quick = {str(46_400_100_000 + n) for n in range(5)}
    posted = time.monotonic()
    for contact in quick:
        post(service.url, new_conversation(int(contact)))
    # No lookup outlives 2 x 2 s + 1 s: the conversation Drift answers at once is in.
    assert wait_for(lambda: seen(segment, quick | {"46400000099"}), 6), service.log()
    assert time.monotonic() - posted < 6


@pytest.mark.parametrize("under", ["sigterm", "deadline"])
def test_a_message_segment_refuses_dead_letters_only_itself(
        start_service: StartService, segment: FakeSegment, database_url: str,
        under: str) -> None:
    # Segment refuses one message of a batch, and its 400 comes back after SIGTERM, or
    # after the round's deadline (a third of the 9 s lease): only that row is dead.
    env = service_env(database_url, segment, DELIVERY_LEASE_SECONDS=9)
    service = start_service(env)
    segment.refuse_containing("<<refused-by-segment>>")
    segment.delay = 1.5 if under == "sigterm" else 3.5
    good = {str(46_200_000_000 + n) for n in range(20)}
    bodies = [new_conversation(int(contact)) for contact in good]
    bodies.insert(10, new_conversation(46_299_999_999, status="<<refused-by-segment>>"))
    assert {answer.label for answer in post_concurrently(service.url, bodies)} == \
        {"200 accepted"}
    assert wait_for(lambda: any(p.ended is None for p in segment.posts), 10)
    segment.delay = 0.0  # the post in flight keeps its delay
    if under == "sigterm":
        time.sleep(0.5)
        assert service.stop() == 0, service.log()
        service = start_service(env, name="restarted")
    assert wait_for(lambda: states(service) == {"delivered": 20, "dead": 1}, 20), \
        (states(service), status(service)["dead_letters"])
    assert seen(segment, good)


def test_lookups_queued_before_a_drift_circuit_opens_are_not_made(
        start_service: StartService, tmp_path: Path, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # Drift's conversations hang (20 s, DRIFT_TIMEOUT_SECONDS 1): once the org's Drift
    # circuit opens, the lookups queued behind it are not made, and a Segment -> Drift
    # timeline write (another destination) is not held up by them.
    for conversation in range(8_000_000, 8_000_040):
        drift.delay[str(conversation)] = 20.0
    drift.add_contact({"id": 77, "attributes": {"externalId": "healthy-user"}})
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        drift, SEGMENT_SHARED_SECRET=SECRET,
                                        DRIFT_TIMEOUT_SECONDS=1))
    post_concurrently(service.url, [participant(c) for c in range(8_000_000, 8_000_040)])
    track = stringify({"type": "track", "userId": "healthy-user", "event": "Paid",
                       "messageId": "queue-1", "timestamp": "2024-05-01T10:00:00Z"})
    posted = time.monotonic()
    answer = post(service.url, track, path="/webhooks/segment", headers=headers(track))
    assert answer.label == "200 accepted"
    assert wait_for(lambda: drift.timeline != [], 5)
    assert time.monotonic() - posted < 5
    time.sleep(max(0.0, 6 - (time.monotonic() - posted)))
    # Without the circuit, 8 lookups at a time, each 1 s, twice: about 48 by now.
    assert len(drift.lookups()) <= 24, len(drift.lookups())
    assert [circuit["destination"].split(":")[0]
            for circuit in status(service)["open_circuits"]] == ["drift"]


def test_a_revoked_drift_token_holds_rows_with_the_reason(
        start_service: StartService, tmp_path: Path, segment: FakeSegment) -> None:
    # Drift answers 401 to the service's token: not an outage (no circuit), but rows held
    # for the token, with the reason, until it is fixed.
    with FakeDrift(token="the-token-drift-knows") as drift:
        service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                            segment, drift, DELIVERY_LOOKUP_WAIT_SECONDS=1))
        for conversation in range(9_100_000, 9_100_005):
            assert post(service.url, participant(conversation)).label == "200 accepted"
        assert wait_for(lambda: states(service) == {"held": 5}, 12), status(service)
        snapshot = status(service)
        assert list(snapshot["backlog"]["held_by_reason"]) == ["no_drift_token"]
        assert snapshot["open_circuits"] == []
