"""What the tests send: Drift webhooks (built, or many distinct ones posted at once) and the
signed bodies of Segment's Webhooks destination."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

TOKEN = "fixture-verification-token"
WRITE_KEY = "test-write-key-0123456789"
DRIFT_TOKEN = "drift-access-token-test"
ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET = "segment-shared-secret-test"
ORG = 5000883


def webhook(event_type: str, data: dict[str, Any], org_id: int = ORG,
            token: str | None = TOKEN) -> dict[str, Any]:
    """A Drift webhook body."""
    body: dict[str, Any] = {"type": event_type, "orgId": org_id, "data": data}
    if token is not None:
        body["token"] = token
    return body


def encode(body: Any) -> bytes:
    """A body as sent: bytes and str as they are (raw JSON text), anything else as JSON whose
    non-ASCII is escaped (a lone surrogate becomes the six characters ``\\ud83d``)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("ascii")


@dataclass
class Answer:
    """What the service answered one request: status (None: no answer), the answer's
    ``status`` or ``error`` word, the JSON body."""

    status: int | None
    word: str
    body: Any

    @property
    def label(self) -> str:
        """``"200 accepted"``, ``"400 invalid_unicode"``, ``"ConnectionError"``..."""
        return f"{self.status} {self.word}" if self.status is not None else self.word


def post(url: str, body: Any, session: requests.Session | None = None,
         timeout: float = 30, path: str = "/webhooks/drift",
         headers: dict[str, str] | None = None) -> Answer:
    """POST one webhook to the service at ``url``."""
    poster = session or requests
    try:
        response = poster.post(url + path, data=encode(body), timeout=timeout,
                               headers={"Content-Type": "application/json",
                                        "X-Verification-Token": TOKEN, **(headers or {})})
    except requests.RequestException as error:
        return Answer(None, type(error).__name__, None)
    try:
        answer = response.json()
    except ValueError:
        answer = response.text[:200]
    word = "?"
    if isinstance(answer, dict):
        word = str(answer.get("status") or answer.get("error") or "?")
    return Answer(response.status_code, word, answer)


def post_concurrently(url: str, bodies: list[Any], connections: int = 8) -> list[Answer]:
    """POST every body over ``connections`` keep-alive connections at once; the answers in
    the bodies' order."""
    local = threading.local()

    def send(body: Any) -> Answer:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post(url, body, local.session)

    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(send, bodies))


def new_conversation(contact: int, org_id: int = ORG, **extra: Any) -> dict[str, Any]:
    """A ``new_conversation`` webhook that needs no Drift lookup; its contact id is its own."""
    data = {"id": contact % 1_000_000_000, "contactId": contact,
            "createdAt": 1714419312425 + contact % 1_000_000, "status": "open",
            "inboxId": 642330, **extra}
    return webhook("new_conversation", data, org_id)


def distinct_webhooks(count: int, start: int = 1) -> list[dict[str, Any]]:
    """``count`` different Drift events of five types that need no Drift API lookup, each
    with its own contact id (its ``anonymousId`` at Segment): ``20_000_000_000 + n``."""
    bodies = []
    for n in range(start, start + count):
        contact = 20_000_000_000 + n
        kind = n % 5
        if kind == 0:
            data = {"id": n, "contactId": contact, "createdAt": 1714419312425 + n,
                    "status": "open", "inboxId": 642330}
            bodies.append(webhook("new_conversation", data))
        elif kind == 1:
            data = {"id": n, "body": f"Yes please {n}", "author": {"id": contact,
                    "type": "contact"}, "conversationId": n, "createdAt": 1714419312425 + n}
            bodies.append(webhook("button_clicked", data))
        elif kind == 2:
            data = {"conversationId": n, "contactId": contact, "playbookId": 2310900,
                    "goalId": f"goal-{n}", "goalName": "Good Lead", "contactEmail": ""}
            bodies.append(webhook("playbook_goal_met", data))
        elif kind == 3:
            data = {"endUserId": contact, "timestamp": 1714419312425 + n,
                    "diff": [{"name": "attributes._classification", "previous": None,
                              "updated": f"Engaged {n}"}]}
            bodies.append(webhook("contact_updated", data))
        else:
            data = {"eventId": f"event-{n}", "schedulerId": contact, "agentId": 2322756,
                    "scheduledAt": 1714422076000 + n, "slotStart": 1714482000000,
                    "slotEnd": 1714483800000, "status": "ACTIVE"}
            bodies.append(webhook("new_meeting", data))
    return bodies


def contact_of(body: dict[str, Any]) -> str:
    """The Drift contact id a webhook of :func:`distinct_webhooks` reaches Segment under."""
    data = body["data"]
    found = (data.get("contactId") or data.get("endUserId") or data.get("schedulerId")
             or (data.get("author") or {}).get("id"))
    return str(found)


# -- Segment's Webhooks destination ---------------------------------------------------------


def sign(body: bytes, secret: str = SECRET) -> str:
    """``X-Signature``: the hex HMAC-SHA1 of ``body`` with ``secret``."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def stringify(value: Any) -> bytes:
    """``JSON.stringify(value)`` as Segment's Node.js code makes it (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """The headers of a signed request, as Webhooks (Actions) sends it."""
    return {"Content-Type": "application/json", "User-Agent": "Segment (Actions)",
            "X-Signature": sign(body, secret)}


def received(hours_ago: float = 0.0) -> str:
    """A ``receivedAt`` as Segment sets it: when Segment got the event (ISO 8601, UTC)."""
    moment = datetime.now(UTC) - timedelta(hours=hours_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def since(days_ago: float) -> str:
    """A ``backfill --since`` argument ``days_ago`` days before now (UTC)."""
    moment = datetime.now(UTC) - timedelta(days=days_ago)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
