"""A stateful loopback fake of Drift's contacts API (the Segment → Drift direction), on
127.0.0.1 (real HTTP).

It keeps contacts by id, and finds them by externalId and by email:

- ``GET /contacts?idType=external&id=…`` and ``GET /contacts?email=…`` → ``{"data": [...]}``
- ``GET /contacts/{id}`` → ``{"data": contact}`` or 404
- ``PATCH /contacts/{id}`` ``{"attributes": {...}}`` → the contact, changed; 404 if unknown
- ``POST /contacts`` ``{"attributes": {...}}`` → the new contact; 400 without an email, 409
  for an externalId taken (or an email taken, without an externalId)
- ``POST /contacts/timeline`` ``{contactId | externalId, event, createdAt}`` → the event;
  404 for a contact it does not know (how Drift answers that is not documented)

Every call is recorded in ``calls`` with the fake's answer. It can fail on purpose:
``fail_next(n, status, retry_after, answer)``, ``fail_every(n, status, retry_after, answer)``
(every n-th call), and be slow (``delay`` seconds before each answer). Only ``Bearer <token>`` is
let in (or the tokens ``authorised`` accepts). With ``case_insensitive_search`` set, the
externalId search matches regardless of case, as a search index may (creating a contact still
needs an externalId no contact has exactly).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .conftest import DRIFT_TOKEN
from .fakes import QuietServer

# The fake's clock for contacts it creates, so that fixture answers are exact.
CREATED_AT = 1714420800000
FIRST_NEW_ID = 1000001

Answer = tuple[int, dict[str, Any]]


class FakeDriftContacts:
    """Drift's contacts and timeline endpoints, keeping what they are told."""

    def __init__(self, token: str = DRIFT_TOKEN,
                 authorised: Callable[[str], bool] | None = None) -> None:
        # App-mode tests let in whatever tokens the fake OAuth server has issued.
        self.authorised = authorised or (lambda presented: presented == token)
        self.contacts: dict[int, dict[str, Any]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.delay = 0.0
        self.requests = 0
        self._next_id = FIRST_NEW_ID
        self._fail_remaining = 0
        self._fail_every = 0
        self._fail_status = 429
        self._retry_after: str | None = None
        self.failures = 0
        self.case_insensitive_search = False
        self._fail_answer: dict[str, Any] | None = None
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Head and body are written apart: with Nagle's algorithm the body would wait
            # for the client's delayed ACK, 40 ms a call on Linux.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def do_PATCH(self) -> None:  # noqa: N802
                fake._handle(self, "PATCH")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> FakeDriftContacts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests call --------------------------------------------------------------------

    def add_contact(self, contact: dict[str, Any]) -> None:
        """A contact Drift already has (``id``, ``createdAt``, ``attributes``)."""
        with self._lock:
            self.contacts[int(contact["id"])] = json.loads(json.dumps(contact))

    def fail_next(self, count: int, status: int = 429, retry_after: str | None = None,
                  answer: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._fail_remaining, self._fail_status = count, status
            self._retry_after = retry_after
            self._fail_answer = answer

    def fail_every(self, every: int, status: int = 429, retry_after: str | None = None,
                   answer: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._fail_every, self._fail_status = every, status
            self._retry_after = retry_after
            self._fail_answer = answer

    def by_external_id(self, external_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._find("externalId", external_id)

    def requests_made(self) -> list[str]:
        """``METHOD /path?query`` of every call, in order."""
        with self._lock:
            return [call["request"] for call in self.calls]

    # -- the HTTP side ----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length", "0") or 0)
        raw = request.rfile.read(length) if length else b""
        if self.delay:
            time.sleep(self.delay)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        with self._lock:
            self.requests += 1
            failing = self._fail_remaining > 0 or (
                self._fail_every and self.requests % self._fail_every == 0)
            body = json.loads(raw) if raw else None
            if failing:
                self._fail_remaining = max(0, self._fail_remaining - 1)
                self.failures += 1
                status = self._fail_status
                answer = self._fail_answer or {"error": {"type": "told_to_fail"}}
                if self._retry_after is not None:
                    headers["Retry-After"] = self._retry_after
            elif not self.authorised(
                    request.headers.get("Authorization", "").removeprefix("Bearer ")):
                status, answer = 401, {"error": {"type": "authentication_error"}}
            else:
                status, answer = self._answer(method, request.path, body)
            call: dict[str, Any] = {"request": f"{method} {request.path}"}
            if body is not None:
                call["body"] = body
            payload = json.dumps(answer).encode()
            # A copy as answered: later calls change the contacts it shows.
            call.update(status=status, answer=json.loads(payload))
            self.calls.append(call)
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer(self, method: str, target: str, body: Any) -> Answer:
        url = urlsplit(target)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if parts[0] != "contacts":
            return 404, {"error": {"type": "not_found"}}
        if method == "GET" and len(parts) == 1:
            if query.get("idType") == "external":
                return 200, {"data": self._search_external_id(query.get("id"))}
            return 200, {"data": self._all("email", query.get("email"))}
        if method == "POST" and parts[1:] == ["timeline"]:
            return self._timeline(body)
        if method == "POST" and len(parts) == 1:
            return self._create(body)
        if len(parts) == 2 and parts[1].isdigit():
            contact = self.contacts.get(int(parts[1]))
            if contact is None:
                return 404, {"error": {"type": "not_found", "message": "no such contact"}}
            if method == "GET":
                return 200, {"data": contact}
            if method == "PATCH":
                return self._patch(contact, body)
        return 404, {"error": {"type": "not_found"}}

    def _search_external_id(self, external_id: str | None) -> list[dict[str, Any]]:
        if not self.case_insensitive_search or external_id is None:
            return self._all("externalId", external_id)
        wanted = external_id.casefold()
        return [contact for contact in self.contacts.values()
                if str(contact["attributes"].get("externalId", "")).casefold() == wanted]

    def _find(self, attribute: str, value: Any) -> dict[str, Any] | None:
        found = self._all(attribute, value)
        return found[0] if found else None

    def _all(self, attribute: str, value: Any) -> list[dict[str, Any]]:
        if value is None:
            return []
        return [contact for contact in self.contacts.values()
                if contact["attributes"].get(attribute) == value]

    def _create(self, body: Any) -> Answer:
        attributes = (body or {}).get("attributes")
        if not isinstance(attributes, dict) or not attributes.get("email"):
            return 400, {"error": {"type": "bad_request", "message": "email is required"}}
        external_id = attributes.get("externalId")
        if external_id is not None and self._find("externalId", external_id):
            return 409, {"error": {"type": "conflict", "message": "externalId exists"}}
        if external_id is None and self._find("email", attributes["email"]):
            return 409, {"error": {"type": "conflict", "message": "email exists"}}
        contact = {"id": self._next_id, "createdAt": CREATED_AT, "attributes": dict(attributes)}
        self.contacts[self._next_id] = contact
        self._next_id += 1
        return 200, {"data": contact}

    def _patch(self, contact: dict[str, Any], body: Any) -> Answer:
        attributes = (body or {}).get("attributes")
        if not isinstance(attributes, dict):
            return 400, {"error": {"type": "bad_request", "message": "attributes required"}}
        if any(isinstance(value, dict | list) for value in attributes.values()):
            return 400, {"error": {"type": "bad_request", "message": "values must be flat"}}
        external_id = attributes.get("externalId")
        other = self._find("externalId", external_id) if external_id is not None else None
        if other is not None and other["id"] != contact["id"]:
            return 409, {"error": {"type": "conflict", "message": "externalId exists"}}
        contact["attributes"].update(attributes)
        return 200, {"data": contact}

    def _timeline(self, body: Any) -> Answer:
        body = body or {}
        if "contactId" in body:
            contact = self.contacts.get(body["contactId"])
        else:
            contact = self._find("externalId", body.get("externalId"))
        if contact is None:
            return 404, {"error": {"type": "not_found", "message": "no such contact"}}
        if not body.get("event"):
            return 400, {"error": {"type": "bad_request", "message": "event is required"}}
        event = {"id": len(self.timeline) + 1, "contactId": contact["id"],
                 "event": body["event"], "createdAt": body.get("createdAt")}
        self.timeline.append(event)
        return 200, {"data": event}
