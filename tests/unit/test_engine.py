"""The delivery engine on an in-memory store: what each row becomes, why it waits (as data),
and that one destination's trouble stays in its own lane. No database, no sockets, no sleeps:
the clock is moved by hand and the transports answer at once."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from drift_segment_source.delivery.breakers import FAILURES_TO_OPEN, PROBE_SECONDS
from drift_segment_source.delivery.lanes import Lanes
from drift_segment_source.delivery.loop import Delivery
from drift_segment_source.delivery.outcomes import Outcomes, Recorder, RetryPolicy
from drift_segment_source.delivery.posting import Deadlines, Poster, breaker_of
from drift_segment_source.delivery.rows import Prepared
from drift_segment_source.delivery.settings import DeliverySettings, RetentionSettings
from drift_segment_source.destinations.segment import SegmentError
from drift_segment_source.drift_api import Credentials, Missing
from drift_segment_source.routing import Destination, Route
from drift_segment_source.store.deliveries import StoredWebhook

from .memory_store import MemoryStore

HOST = "https://segment.test"
KEY_A, KEY_B = "write-key-of-org-a-0001", "write-key-of-org-b-0002"
ORG_A, ORG_B = 1001, 1002


class Clock:
    """Wall and monotonic time moved by hand; waits end as soon as what they wait for is
    done (threads here finish at once: nothing ever waits out a timeout)."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(min(seconds, 5.0))

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Transport:
    """Segment, in process: records batches by write key; fails as it is told, per key."""

    def __init__(self) -> None:
        self.batches: dict[str, list[list[dict[str, Any]]]] = {KEY_A: [], KEY_B: []}
        self.failing: dict[str, SegmentError] = {}
        self.blocked: dict[str, threading.Event] = {}

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        if write_key in self.blocked:
            self.blocked[write_key].wait(5)
        if write_key in self.failing:
            raise self.failing[write_key]
        self.batches[write_key].append(batch)

    def messages(self, write_key: str) -> list[dict[str, Any]]:
        return [message for batch in self.batches[write_key] for message in batch]


class Routing:
    """Org A sends with key A, org B with key B, on one host; no Drift token."""

    def route(self, org_id: int) -> Route:
        return Route()

    def destination(self, org_id: int) -> Destination:
        return Destination(KEY_A if org_id == ORG_A else KEY_B, HOST)

    def drift_credentials(self, org_id: int) -> Credentials | None:
        return Credentials("drift-token") if org_id == ORG_A else None

    def readiness(self) -> dict[str, Any]:
        return {}


class DriftApi:
    """The Drift API, in process: conversations answer when released."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.released.set()
        self.calls = 0

    def cached_conversation(self, org_id: int, conversation_id: Any) -> None:
        return None

    def conversation(self, org_id: int, conversation_id: Any,
                     credentials: Credentials) -> dict[str, Any]:
        self.calls += 1
        self.released.wait(5)
        if int(conversation_id) == 666:
            return {"id": 666, "status": "open"}  # a conversation without a contact
        return {"id": int(conversation_id), "contactId": 4242}

    def cached_contact(self, org_id: int, contact_id: str) -> Missing:
        return Missing()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


@pytest.fixture
def transport() -> Transport:
    return Transport()


@pytest.fixture
def drift() -> DriftApi:
    return DriftApi()


def delivery(store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock,
             **settings: Any) -> Delivery:
    # A lookup the Drift API answers is waited for (it answers at once, so nothing waits for
    # long); the test of a lookup that does not answer waits for none.
    tuned = {"backoff_seconds": 10.0, "backoff_max_seconds": 60.0, "lookup_wait_seconds": 5.0,
             **settings}
    return Delivery(DeliverySettings(**tuned), RetentionSettings(), store=store,  # type: ignore
                    routing=Routing(), transport=transport, drift_api=drift,  # type: ignore
                    clock=clock, owner="loop-under-test")


def conversation(store: MemoryStore, org_id: int, number: int) -> int:
    return store.add(org_id, "new_conversation", {"type": "new_conversation", "orgId": org_id,
                                                  "data": {"id": number, "contactId": number,
                                                           "createdAt": 1714419312425}})


def participant(store: MemoryStore, org_id: int, conversation_id: int = 77) -> int:
    """An event whose contact only the Drift API knows (a conversation lookup)."""
    return store.add(org_id, "conversation_participant_added", {
        "type": "conversation_participant_added", "orgId": org_id,
        "data": {"conversationId": conversation_id, "changedAt": 1714422673598,
                 "addedParticipants": [1]}})


def run(engine: Delivery) -> int:
    """One round, and its lanes' work recorded."""
    claimed = engine.run_round()
    assert engine.drain(5)
    return claimed


def test_a_round_delivers_each_row_to_its_destination_and_records_it(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    ids = [conversation(store, ORG_A, n) for n in (1, 2)] + [conversation(store, ORG_B, 3)]
    assert run(delivery(store, transport, drift, clock)) == 3
    assert [m["properties"]["id"] for m in transport.messages(KEY_A)] == [1, 2]
    assert [m["properties"]["id"] for m in transport.messages(KEY_B)] == [3]
    assert {store.row(row_id).state for row_id in ids} == {"delivered"}
    assert {store.row(row_id).wait_reason for row_id in ids} == {None}


def test_a_failing_destination_backs_off_only_its_rows_and_says_on_what(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    transport.failing[KEY_B] = SegmentError(503, "down")
    good, bad = conversation(store, ORG_A, 1), conversation(store, ORG_B, 2)
    run(delivery(store, transport, drift, clock))
    assert store.row(good).state == "delivered"
    waiting = store.row(bad)
    assert (waiting.state, waiting.wait_reason) == ("pending", "backoff")
    assert waiting.waiting_on == breaker_of(Destination(KEY_B, HOST))
    assert waiting.next_attempt_at > clock.now and waiting.attempts == 1


def test_an_open_circuit_parks_rows_without_spending_attempts_until_the_probe(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    transport.failing[KEY_B] = SegmentError(503, "down")
    engine = delivery(store, transport, drift, clock, backoff_seconds=0.0,
                      backoff_max_seconds=0.0)
    rows = [conversation(store, ORG_B, n) for n in range(4)]
    for _ in range(FAILURES_TO_OPEN + 2):
        run(engine)
    parked = [store.row(row_id) for row_id in rows]
    assert {row.wait_reason for row in parked} == {"parked"}
    attempts = sum(row.attempts for row in parked)
    for _ in range(5):  # no probe is due: nothing is attempted
        run(engine)
    assert sum(store.row(row_id).attempts for row_id in rows) == attempts
    del transport.failing[KEY_B]
    clock.advance(PROBE_SECONDS)
    run(engine)  # the probe succeeds: the rows behind the circuit are due at once
    run(engine)
    assert {store.row(row_id).state for row_id in rows} == {"delivered"}


def test_a_destination_that_hangs_holds_up_only_its_own_lane(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    recorded: list[Outcomes] = []
    lanes = Lanes(Poster(transport, delivery(store, transport, drift, clock).breakers, clock,
                         threading.Event()), recorded.append, clock, threading.Event())
    transport.blocked[KEY_B] = threading.Event()
    deadlines = Deadlines(start_by=clock.now + 20, end_by=clock.now + 48)

    def job(org_id: int, row_id: int) -> Future[None]:
        row = StoredWebhook(row_id, org_id, "new_conversation", {}, clock.now, clock.now, 1)
        message = {"type": "track", "messageId": f"m-{row_id}", "anonymousId": "1"}
        return lanes.submit(Routing().destination(org_id),
                            [Prepared(row, Routing().destination(org_id), [message])],
                            Outcomes(attempts={row_id: 1}), deadlines)

    hung = job(ORG_B, 1)
    quick = job(ORG_A, 2)
    quick.result(timeout=5)
    assert not hung.done(), "B's post still hangs"
    assert [outcomes.delivered for outcomes in recorded] == [[2]]
    transport.blocked[KEY_B].set()
    hung.result(timeout=5)
    assert sorted(outcomes.delivered[0] for outcomes in recorded) == [1, 2]


def test_rows_without_lookups_never_wait_behind_a_lookup(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    drift.released.clear()
    slow = participant(store, ORG_A)
    quick = conversation(store, ORG_A, 1)
    engine = delivery(store, transport, drift, clock, lookup_wait_seconds=0.0)
    run(engine)
    assert store.row(quick).state == "delivered"
    waiting = store.row(slow)
    assert (waiting.state, waiting.wait_reason, waiting.attempts) == ("pending", "lookup", 0)
    drift.released.set()
    assert engine.lookup_ended.wait(5)
    run(engine)  # the ended lookup makes its row due, and the row takes its outcome
    assert store.row(slow).state == "delivered"
    assert drift.calls == 1


def test_a_row_needing_a_token_it_lacks_is_held_with_the_reason(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    held = participant(store, ORG_B)  # org B has no Drift token
    run(delivery(store, transport, drift, clock))
    row = store.row(held)
    assert (row.state, row.hold_reason) == ("held", "no_drift_token")
    assert "DRIFT_ACCESS_TOKEN" in (row.last_error or "")


def test_a_row_without_a_contact_is_a_dead_letter_and_fails_alone(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    poison = participant(store, ORG_A, conversation_id=666)
    good = conversation(store, ORG_A, 1)
    run(delivery(store, transport, drift, clock))
    assert store.row(good).state == "delivered"
    assert store.row(poison).state == "dead"
    assert "no Drift contact id" in (store.row(poison).last_error or "")
    assert {m["anonymousId"] for m in transport.messages(KEY_A)} == {"1"}, "never 'None'"


def test_a_row_past_the_age_limit_that_still_fails_is_a_dead_letter_with_the_reason(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    old = conversation(store, ORG_A, 1)
    clock.advance(3 * 3600)
    transport.failing[KEY_A] = SegmentError(503, "down")
    run(delivery(store, transport, drift, clock, max_age_hours=2))
    assert store.row(old).state == "dead"
    assert store.row(old).last_error == "undelivered after 2 hours: Segment 503: down"


def test_a_row_past_the_age_limit_that_can_be_delivered_is(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    """Age is no reason to drop a row that can go now (a clock jumped ahead, a long outage
    just ended): only a row that still waits ages out."""
    old = conversation(store, ORG_A, 1)
    clock.advance(30 * 86400)
    run(delivery(store, transport, drift, clock, max_age_hours=2))
    assert store.row(old).state == "delivered"


def test_a_stopping_loop_hands_rows_back_untried(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    row_id = conversation(store, ORG_A, 1)
    engine = delivery(store, transport, drift, clock)
    engine.stop()
    run(engine)
    row = store.row(row_id)
    assert (row.state, row.wait_reason, row.attempts) == ("pending", "deferred", 0)
    assert transport.messages(KEY_A) == []


def test_the_retry_policy_grows_with_attempts_under_its_ceiling() -> None:
    policy = RetryPolicy(base_seconds=10, ceiling_seconds=60, max_attempts=5)
    lowest = [policy.delay(attempts, None, draw=lambda low, high: low) for attempts in (1, 4)]
    highest = [policy.delay(attempts, None, draw=lambda low, high: high)
               for attempts in (1, 2, 3, 4, 5)]
    assert lowest == [5, 5]
    assert highest == [10, 20, 40, 60, 60]


def test_the_retry_policy_honours_retry_after_up_to_its_ceiling() -> None:
    policy = RetryPolicy(base_seconds=1, ceiling_seconds=60, max_attempts=5)
    assert policy.delay(1, 30, draw=lambda low, high: low) == 30
    assert policy.delay(1, 10**9, draw=lambda low, high: low) == 60


def test_the_retry_policy_gives_up_after_its_attempts() -> None:
    policy = RetryPolicy(base_seconds=1, ceiling_seconds=60, max_attempts=3)
    assert [policy.exhausted(attempts) for attempts in (1, 2, 3, 4)] == [
        False, False, True, True]


def test_a_row_out_of_attempts_is_a_dead_letter_naming_the_last_failure(
        store: MemoryStore, clock: Clock) -> None:
    row_id = conversation(store, ORG_A, 1)
    [row] = store.claim("owner", 10, 60)
    outcomes = Outcomes(attempts={row_id: row.attempts})
    outcomes.file(row_id, SegmentError(503, "down"))
    Recorder(store, "owner", RetryPolicy(1, 60, max_attempts=1), clock,  # type: ignore
             0.0).record(outcomes)
    assert store.row(row_id).state == "dead"
    assert store.row(row_id).last_error == "gave up after 1 attempts: Segment 503: down"


def test_a_refused_message_is_a_dead_letter_and_a_server_error_a_retry() -> None:
    outcomes = Outcomes()
    outcomes.file(1, SegmentError(400, "bad message"))
    outcomes.file(2, SegmentError(500, "oops"), "segment:x")
    outcomes.file(3, KeyError("translator bug"))
    assert [failure.id for failure in outcomes.dead] == [1, 3]
    assert outcomes.dead[1].reason.startswith("cannot translate: KeyError")
    assert [(failure.id, failure.waiting_on) for failure in outcomes.retry] == [
        (2, "segment:x")]


def test_rows_for_a_busy_destination_go_back_and_others_are_not_held_up(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    """A destination that answers, slowly, holds up its own lane only: while it still posts
    one job with another waiting, the next rows for it go back for a moment."""
    transport.blocked[KEY_A] = threading.Event()
    engine = delivery(store, transport, drift, clock, lane_wait_seconds=0.0)
    first = [conversation(store, ORG_A, n) for n in (1, 2)]
    engine.run_round()  # A's job runs (and blocks)
    queued = conversation(store, ORG_A, 3)
    engine.run_round()  # A's second job waits behind it
    later, other = conversation(store, ORG_A, 4), conversation(store, ORG_B, 5)
    engine.run_round()
    assert (store.row(later).state, store.row(later).wait_reason) == ("pending", "deferred")
    assert engine.paced, "the loop waits a poll interval before claiming them again"
    assert engine.drain(0) is False
    transport.blocked[KEY_A].set()
    assert engine.drain(5)
    assert store.row(other).state == "delivered"
    assert {store.row(row_id).state for row_id in [*first, queued]} == {"delivered"}


def test_a_stopping_loop_does_not_wait_for_a_slow_post(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    transport.blocked[KEY_A] = threading.Event()
    conversation(store, ORG_A, 1)
    engine = delivery(store, transport, drift, clock, lane_wait_seconds=60.0)
    round_thread = threading.Thread(target=engine.run_round)
    round_thread.start()
    engine.stop()
    round_thread.join(5)
    assert not round_thread.is_alive(), "the round returned while the post still hangs"
    transport.blocked[KEY_A].set()


def test_rows_left_waiting_by_an_earlier_process_go_when_their_destination_answers(
        store: MemoryStore, transport: Transport, drift: DriftApi, clock: Clock) -> None:
    transport.failing[KEY_A] = SegmentError(429, "slow down", retry_after=300.0)
    earlier = [conversation(store, ORG_A, n) for n in (1, 2)]
    run(delivery(store, transport, drift, clock))
    assert {store.row(row_id).wait_reason for row_id in earlier} == {"backoff"}
    del transport.failing[KEY_A]
    restarted = delivery(store, transport, drift, clock)  # a new process: its breakers closed
    conversation(store, ORG_A, 3)
    run(restarted)  # the new row goes: the destination answers
    run(restarted)  # and the rows backing off behind it are due at once, not in 5 minutes
    assert {store.row(row_id).state for row_id in earlier} == {"delivered"}


def test_a_drift_write_still_running_is_not_made_again_by_another_loop(
        store: MemoryStore, transport: Transport, clock: Clock) -> None:
    class SlowDrift(DriftApi):
        """The Drift API whose timeline writes answer when released."""

        def __init__(self) -> None:
            super().__init__()
            self.written: list[dict[str, Any]] = []

        def timeline_event(self, event: dict[str, Any], credentials: Credentials) -> None:
            self.released.wait(5)
            self.written.append(event)

    slow = SlowDrift()
    slow.released.clear()
    row_id = store.add(ORG_A, "segment:track", {"type": "track", "userId": "u-1",
                                                "event": "Signed Up", "messageId": "m-1",
                                                "timestamp": "2024-04-29T19:40:00.123Z"})
    first = delivery(store, transport, slow, clock, lookup_wait_seconds=0.0)
    other = Delivery(DeliverySettings(lookup_wait_seconds=0.0), RetentionSettings(),
                     store=store, routing=Routing(), transport=transport,  # type: ignore
                     drift_api=slow, clock=clock, owner="another-loop")  # type: ignore
    first.run_round()
    assert store.row(row_id).wait_reason == "lookup"
    clock.advance(first.settings.lookup_limit_seconds + 1)  # past one lookup's limit
    assert other.run_round() == 0, "the row waits for its write, not for another loop"
    slow.released.set()
    assert first.lookup_ended.wait(5)
    first.run_round()
    assert store.row(row_id).state == "delivered"
    assert len(slow.written) == 1
