"""Nothing is lost: every webhook answered ``accepted`` (or ``duplicate``) reaches Segment,
whatever the other webhooks committed or delivered with it do, and whatever garbage Drift's
API answers on the way (see docs/reliability.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import Service, wait_for
from ..support.webhooks import new_conversation, post, post_concurrently, webhook
from .conftest import StartService, dead_reasons, service_env, states

SURROGATE = "\ud83d"  # json.dumps writes it as the six characters \ud83d
NOT_IDS = ("None", "none", "null", "", "undefined")


@pytest.fixture(scope="module")
def service(start_module_service: StartService, module_folder: Any,
            module_segment: FakeSegment, module_drift: FakeDrift) -> Iterator[Service]:
    """The self-hosted service of this module (SQLite, quick retries)."""
    env = service_env(f"sqlite:///{module_folder / 'store.sqlite3'}", module_segment,
                      module_drift, DELIVERY_BATCH_SIZE=100)
    yield start_module_service(env)


def undelivered(segment: FakeSegment, contacts: set[str], seconds: float = 20) -> set[str]:
    """The contacts of ``contacts`` not seen at Segment after waiting up to ``seconds``."""
    wait_for(lambda: contacts <= set(segment.by_anonymous_id()), seconds, step=0.1)
    return contacts - set(segment.by_anonymous_id())


def test_a_lone_surrogate_never_turns_a_clean_webhook_into_a_duplicate(
        service: Service, module_segment: FakeSegment) -> None:
    # 120 distinct events from 12 connections at once, one in six with a lone surrogate:
    # group commits mix them, and none may take the clean ones down with it.
    bodies, poisoned = [], set()
    for n in range(120):
        extra: dict[str, Any] = {}
        if n % 6 == 5:
            extra["conversationTags"] = [{"color": "red", "name": "Hot lead " + SURROGATE}]
            poisoned.add(n)
        bodies.append(new_conversation(41_000_000_000 + n, **extra))
    answers = post_concurrently(service.url, bodies, connections=12)
    labels = [answer.label for answer in answers]
    assert {labels[n] for n in poisoned} == {"400 invalid_unicode"}, labels
    clean = [n for n in range(120) if n not in poisoned]
    assert {labels[n] for n in clean} == {"200 accepted"}, labels
    assert undelivered(module_segment, {str(41_000_000_000 + n) for n in clean}) == set()


@pytest.mark.parametrize("poison", ["no-contact", "deep-json", "retry-after"])
def test_a_poison_row_does_not_freeze_its_batch(service: Service, module_segment: FakeSegment,
                                                module_drift: FakeDrift, poison: str) -> None:
    # A phone_captured whose contact must come from its conversation, and the conversation
    # has none (or Drift answers JSON nested 5,000 deep, or a 429 with a Retry-After of 31
    # years while Segment fails the round's batch once): 20 good rows claimed with it.
    conversation = {"no-contact": "9001", "deep-json": "9003", "retry-after": "9005"}[poison]
    if poison == "no-contact":
        module_drift.conversations[conversation] = {"id": int(conversation), "status": "open"}
    elif poison == "deep-json":
        module_drift.raw[f"GET /conversations/{conversation}"] = (
            200, b'{"data":' + b"[" * 5000 + b"]" * 5000 + b"}", {})
    else:
        module_drift.raw[f"GET /conversations/{conversation}"] = (
            429, b'{"error":"rate_limited"}', {"Retry-After": "999999999"})
        module_segment.fail_next(1)
    # Each case in an org of its own: what one does to its org's Drift circuit is its own.
    org = int(conversation)
    base = 42_000_000_000 + 1000 * org
    good = [new_conversation(base + n, org_id=org) for n in range(20)]
    phone = webhook("phone_captured", {"conversationId": int(conversation),
                                       "phoneNumber": "+1 555 0100", "authorType": "user",
                                       "authorId": 77}, org_id=org)
    answers = post_concurrently(service.url, good[:10] + [phone] + good[10:], connections=8)
    assert {answer.label for answer in answers} == {"200 accepted"}
    assert undelivered(module_segment, {str(base + n) for n in range(20)}) == set()


def test_no_message_leaves_without_a_real_contact_id(service: Service,
                                                     module_segment: FakeSegment,
                                                     module_drift: FakeDrift) -> None:
    # A participant event without contactId whose conversation has none either.
    module_drift.conversations["9002"] = {"id": 9002, "status": "open", "participants": [77]}
    answer = post(service.url, webhook("conversation_participant_added", {
        "conversationId": 9002, "addedParticipants": [77], "changedAt": 1714419400000},
        org_id=9002))
    assert answer.label == "200 accepted"
    row = answer.body["id"]
    # It ends as a dead letter with its reason (or waits), never as a message.
    wait_for(lambda: row in dead_reasons(service), 10, step=0.2)
    assert [message for message in module_segment.messages
            if str(message.get("anonymousId")) in NOT_IDS
            or (message.get("userId") is not None and str(message["userId"]) in NOT_IDS)] == []
    assert not [message for message in module_segment.messages
                if (message.get("properties") or {}).get("conversationId") == 9002]


def test_garbled_drift_answers_are_retried_not_dead_lettered(
        service: Service, module_segment: FakeSegment, module_drift: FakeDrift) -> None:
    # A 429 whose Retry-After is "²" (a digit to str.isdigit, not a number).
    module_drift.raw["GET /conversations/72"] = (429, b'{"error":"rate_limited"}',
                                                 {"Retry-After": "\u00b2"})
    module_drift.conversations["72"] = {"id": 72, "contactId": 47_100_000_072}
    answer = post(service.url, webhook("conversation_participant_added", {
        "conversationId": 72, "addedParticipants": [1], "changedAt": 1714419400000},
        org_id=72))
    assert answer.label == "200 accepted"
    assert wait_for(lambda: len(module_drift.paths("/conversations/72")) >= 2, 10)
    assert answer.body["id"] not in dead_reasons(service)
    del module_drift.raw["GET /conversations/72"]
    assert undelivered(module_segment, {"47100000072"}, 30) == set()


def test_a_dotted_trait_name_never_turns_an_accepted_webhook_into_a_dead_letter(
        service: Service, module_segment: FakeSegment) -> None:
    # `attributes.a.a.a…` becomes nested traits at delivery: 600 deep, or 12 x 390 deep in
    # a webhook under 10 KB whose message grows past Segment's 32 KB.
    cases = {
        46_500_000_000: [{"name": "attributes." + "a." * 599 + "a", "updated": "x"}],
        46_500_000_001: [{"name": f"attributes.k{i}." + "a." * 389 + "a", "updated": "x"}
                         for i in range(12)],
        46_500_000_002: [{"name": "attributes.email", "updated": "c@example.com"}],
    }
    answers = {str(contact): post(service.url, webhook("contact_updated", {
        "endUserId": contact, "diff": diff})) for contact, diff in cases.items()}
    accepted = {contact for contact, answer in answers.items() if answer.word == "accepted"}
    assert all(answer.word == "accepted" or answer.status in (400, 422)
               for answer in answers.values()), answers
    assert "46500000002" in accepted
    assert undelivered(module_segment, accepted) == set()


def test_a_huge_external_id_never_turns_an_accepted_event_into_a_dead_letter(
        start_service: StartService, tmp_path: Any, segment: FakeSegment,
        drift: FakeDrift) -> None:
    # Stitching adds the contact's externalId as userId at delivery: 17 KB in the webhook
    # itself, 33 KB from Drift's contact for a small event.
    contact = 3_100_000_123
    drift.add_contact({"id": contact, "attributes": {"externalId": "x" * 33_000,
                                                     "email": "u@example.com"}})
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        drift, IDENTITY_STITCHING="external_id",
                                        DELIVERY_LOOKUP_WAIT_SECONDS=2))
    identified = post(service.url, webhook("contact_identified", {
        "endUserId": contact + 1, "timestamp": 1714419312425,
        "attributes": {"email": "a@example.com", "externalId": "u" * 17_000}}))
    conversation = post(service.url, new_conversation(contact))
    accepted = {str(contact + 1)} if identified.word == "accepted" else set()
    assert identified.word == "accepted" or identified.status in (400, 422), identified
    assert conversation.label == "200 accepted"
    assert undelivered(segment, accepted | {str(contact)}) == set()
    assert states(service).get("dead", 0) == 0, dead_reasons(service)


@pytest.mark.parametrize("redirect", [301, 308])
def test_a_redirecting_segment_host_never_counts_as_delivered(
        start_service: StartService, tmp_path: Any, redirect: int) -> None:
    # A collector behind a redirect: following a 301 turns the POST into a GET whose 200
    # proves nothing was uploaded. Rows wait for SEGMENT_HOST to be fixed.
    with FakeSegment() as collector, FakeSegment() as redirector:
        collector.get_status = 200
        redirector.redirect_to, redirector.redirect_status = collector.url, redirect
        service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                            redirector))
        contacts = {str(47_400_000_000 + n) for n in range(10)}
        for contact in contacts:
            assert post(service.url, new_conversation(int(contact))).label == "200 accepted"
        assert wait_for(lambda: len(redirector.posts) >= 3, 15)
        # Retried, waiting for the fix: not delivered (nothing was uploaded), not dead.
        assert collector.messages == []
        assert states(service) == {"pending": 10}
