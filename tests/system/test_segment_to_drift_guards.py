"""Segment -> Drift: only what Segment signed is acted on, the client script's own events
never come back into Drift, and a large signed batch is taken in before Segment gives up on
it (see docs/segment-to-drift.md)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support.fake_drift import FakeDrift
from ..support.service import Service, wait_for
from ..support.webhooks import SECRET, headers, post, sign, stringify
from .conftest import StartService, service_env, states

SEGMENT_WAITS = 10.0  # seconds Segment's Webhooks destination waits for an answer


@pytest.fixture(scope="module")
def service(start_module_service: StartService, module_folder: Path,
            module_drift: FakeDrift) -> Iterator[Service]:
    """A self-hosted service taking Segment's signed events into the fake Drift."""
    module_drift.add_contact({"id": 77, "attributes": {"externalId": "victim"}})
    module_drift.add_contact({"id": 78, "attributes": {"externalId": "someone"}})
    yield start_module_service(service_env(f"sqlite:///{module_folder / 'store.sqlite3'}",
                                           drift=module_drift, SEGMENT_SHARED_SECRET=SECRET))


def send(service: Service, body: bytes, signature: str) -> requests.Response:
    """POST a body to /webhooks/segment with this X-Signature."""
    return requests.post(service.url + "/webhooks/segment", data=body, timeout=30,
                         headers={"Content-Type": "application/json",
                                  "X-Signature": signature})


def test_the_client_scripts_own_events_never_echo_back_into_drift(
        service: Service, module_drift: FakeDrift) -> None:
    # /drift-segment.js tracks Drift's widget events; Segment forwards them to us. The
    # exact call the script makes, as analytics.js sends it.
    script = requests.get(service.url + "/drift-segment.js", timeout=10).text
    prefix = re.search(r'EVENT_PREFIX\s*=\s*"([^"]+)"', script)
    assert prefix, "the script names its events"
    message = {"type": "track", "event": prefix.group(1) + "conversation:started",
               "anonymousId": "1234567890", "messageId": "ajs-next-1b2c3d",
               "properties": {"conversationId": 42, "contactId": "1234567890"},
               "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"},
                           "page": {"url": "https://example.com/"}},
               "integrations": {}, "timestamp": "2024-05-01T10:00:00.000Z"}
    body = json.dumps(message).encode()
    answer = send(service, body, sign(body))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored", answer.text
    time.sleep(1.0)  # a round or two: a write would be on its way
    assert module_drift.timeline == []


def test_a_captured_signature_cannot_authenticate_forged_batch_elements(
        service: Service, module_drift: FakeDrift) -> None:
    # One genuine signed message, seen once; later the same bytes lead a batch of forged
    # identifies, under the same signature (a batch is signed over its first element).
    genuine = json.dumps({"type": "track", "userId": "someone", "event": "Signed Up",
                          "messageId": "genuine-1",
                          "timestamp": "2024-05-01T10:00:00Z"}).encode()
    signature = sign(genuine)
    assert send(service, genuine, signature).status_code == 200
    forged = [{"type": "identify", "userId": "victim", "messageId": f"forged-{n}",
               "traits": {"email": "attacker@evil.example", "name": f"pwned {n}"}}
              for n in range(3)]
    replay = b"[" + genuine + b"," + json.dumps(forged)[1:-1].encode() + b"]"
    answer = send(service, replay, signature)
    assert answer.status_code == 401, answer.text
    assert wait_for(lambda: states(service).get("delivered") == 1, 10), states(service)
    assert [call for call in module_drift.calls if call["request"].startswith("PATCH")] == []
    assert module_drift.contacts[77]["attributes"] == {"externalId": "victim"}


def test_a_large_signed_batch_is_taken_in_before_segment_gives_up(
        start_service: StartService, tmp_path: Path) -> None:
    # 4,000 messages in about 1 MB: taking them in must not cost a scan of the whole body
    # per message (12,000 once took 15 s, past Segment's 10 s). Delivery runs elsewhere
    # (a `worker`), so what is timed is the intake alone.
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                        SEGMENT_SHARED_SECRET=SECRET,
                                        DELIVERY_IN_WEB="false"))
    count = 4000
    pad = 950_000 // count - 130
    messages = [{"type": "track", "userId": f"u{n}", "event": "E" + "x" * pad,
                 "messageId": f"big-{n}", "receivedAt": "2024-05-01T10:00:00.000Z"}
                for n in range(count)]
    messages[0]["receivedAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    body = stringify(messages)
    answer = post(service.url, body, path="/webhooks/segment", timeout=SEGMENT_WAITS,
                  headers=headers(stringify(messages[0])))
    assert answer.status == 200, answer.label
    assert answer.body["status"] == "batch"
    assert len(answer.body["results"]) == count
