"""Property-based attack on the whole endpoint, many requests committed together.

Hypothesis builds bursts of webhooks: distinct Drift events carrying a "noise" field of any
JSON (full Unicode with lone surrogates, deep and wide nesting, huge and negative numbers,
overflowing floats), exact repeats of them, and junk bodies. The burst is posted from many
connections at once to a real threaded server, then delivered. The properties
(docs/reliability.md#what-every-request-gets):

- every answer is one of the documented answers, never a 5xx;
- ``accepted`` → delivered to Segment exactly once (each event has its own contact id);
- ``duplicate`` → another copy of the same event was accepted;
- a refusal stores nothing; what the store or Segment cannot carry is refused, never accepted.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drift_segment_source.app import make_delivery
from drift_segment_source.sources.door import MAX_DEPTH

from ..support.fake_segment import FakeSegment
from .conftest import TOKEN, AppFactory, webhook
from .live_server import serving

ANSWERS = {200: {"accepted", "duplicate", "ignored"},
           400: {"invalid_json", "json_too_deep", "invalid_unicode", "invalid_envelope",
                 "unsupported_content_type", "beyond_dedupe_horizon", "unstorable"},
           401: {"unauthorized"}, 413: {"payload_too_large"}, 422: {"invalid_data"}}

# Every character, lone surrogates included (json.dumps writes them as \\udXXX escapes).
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                 exclude_categories=()), max_size=12)
leaves = (st.none() | st.booleans() | any_text
          | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(any_text, inner, max_size=3), max_leaves=12)
contacts = itertools.count(30_000_000_000)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


def storable(value: Any) -> bool:
    """Whether a JSON value holds no lone surrogate (UTF-8 can encode all of it)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# (raw JSON text for the noise field, whether the door must take it)
noise = (json_values.map(lambda value: (json.dumps(value), storable(value)))
         | st.integers(MAX_DEPTH, 300).map(lambda depth: (json.dumps(nested(depth)), False))
         | st.integers(1, 20).map(lambda depth: (json.dumps(nested(depth)), True))
         | st.sampled_from([("1e400", False), ("-1e999", False), ('"\\ud83d"', False),
                            ('"\\ude00x"', False), ('{"\\udbff": 1}', False),
                            ('"\\ud83d\\ude00"', True), (str(2**200), True),
                            (str(-(2**200)), True), ("1e-400", True)]))


def event(kind: str, contact: int, noise_text: str) -> str:
    """A distinct Drift event whose only contact is ``contact``, with raw ``noise``."""
    if kind == "new_conversation":
        data = {"id": contact, "contactId": contact, "createdAt": 1714419312425}
    elif kind == "button_clicked":
        data = {"id": contact, "body": "Yes", "conversationId": 5,
                "author": {"id": contact, "type": "contact"}, "createdAt": 1714419312425}
    elif kind == "playbook_goal_met":
        data = {"conversationId": contact, "contactId": contact, "goalId": "g"}
    elif kind == "contact_updated":
        data = {"endUserId": contact, "timestamp": 1714419380512,
                "diff": [{"name": "attributes.plan", "updated": "pro"}]}
    else:
        data = {"eventId": str(contact), "schedulerId": contact, "scheduledAt": 1714422076000}
    body = json.dumps(webhook(kind, {**data, "noise": "NOISE"}))
    return body.replace('"NOISE"', noise_text)


Item = tuple[int | None, str, bool]  # (contact id, None for junk; raw body; must be taken)


@st.composite
def bursts(draw: st.DrawFn) -> list[Item]:
    """Distinct events with noise, some sent up to three times, and junk, shuffled."""
    burst: list[Item] = []
    for _ in range(draw(st.integers(5, 25))):
        kind = draw(st.sampled_from(["new_conversation", "button_clicked", "playbook_goal_met",
                                     "contact_updated", "new_meeting"]))
        contact = next(contacts)
        noise_text, takeable = draw(noise)
        burst.extend([(contact, event(kind, contact, noise_text), takeable)]
                     * draw(st.integers(1, 3)))
    junk = draw(st.lists(st.binary(max_size=40).map(lambda raw: raw.decode("latin-1"))
                         | json_values.map(json.dumps), max_size=5))
    burst.extend((None, text, False) for text in junk)
    return draw(st.permutations(burst))


@pytest.fixture
def live(make_app: AppFactory, segment: FakeSegment) -> Iterator[tuple[Flask, str]]:
    app = make_app(SEGMENT_HOST=segment.url, DELIVERY_BATCH_SIZE=200)
    with serving(app) as url:
        yield app, url


def post(url: str, body: str) -> tuple[int, dict[str, Any]]:
    answer = requests.post(url + "/webhooks/drift", data=body.encode("utf-8", "surrogatepass"),
                           headers={"Content-Type": "application/json",
                                    "X-Verification-Token": TOKEN}, timeout=60)
    return answer.status_code, answer.json()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(burst=bursts())
def test_every_answer_is_true_under_concurrent_hostile_bursts(
        live: tuple[Flask, str], segment: FakeSegment,
        burst: list[Item]) -> None:
    app, url = live
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda item: post(url, item[1]), burst))
    by_contact: dict[int, list[str]] = defaultdict(list)
    for (contact, _, takeable), (status, answer) in zip(burst, answers, strict=True):
        assert status in ANSWERS, (status, answer)
        outcome = answer.get("status") or answer.get("error")
        assert outcome in ANSWERS[status], (status, answer)
        if contact is not None:
            by_contact[contact].append(outcome)
            if takeable:
                assert outcome in ("accepted", "duplicate"), answer
            else:
                assert status == 400, f"{answer} for a body the store cannot carry"
    delivery = make_delivery(app)
    while delivery.run_round():
        pass
    sent = Counter(message["anonymousId"] for message in segment.messages)
    for contact, outcomes in by_contact.items():
        accepted = outcomes.count("accepted")
        assert accepted <= 1, outcomes
        if "duplicate" in outcomes:
            assert accepted == 1, f"duplicate without a stored copy: {outcomes}"
        assert sent[str(contact)] == accepted, (contact, outcomes)
