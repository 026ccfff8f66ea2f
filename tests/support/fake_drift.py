"""A loopback fake of Drift, one server for every part the service talks to:

- OAuth (when made with a client id and secret): the authorize page, ``/oauth2/token``
  (refresh tokens are single-use, as a rotating provider's), ``/app/token_info`` and the
  integration settings page;
- conversations: ``GET /conversations/{id}``, ``/conversations/list`` and
  ``/users/meetings/org`` (what ``backfill`` pages through);
- contacts, kept by id and found by externalId and email: ``GET /contacts?idType=external&
  id=…`` / ``?email=…``, ``GET`` and ``PATCH /contacts/{id}``, ``POST /contacts`` (400 without
  an email, 409 for an externalId or email taken) and ``POST /contacts/timeline`` (404 for a
  contact it does not know).

Every call is kept in ``calls`` (``{"request", "body", "status", "answer"}``) and with its
time in ``log``. Answers can be made slow (``delay[id]``, ``delay_every``, ``slow_calls``),
trickled byte by byte (``trickle[id]``), garbled (``garbage[id]``, ``raw``), failed
(``status[id]``, ``fail_next``, ``fail_every``); ``search_lag`` hides a new contact from
searches for a while. ``id`` is the last part of the path (a conversation or contact id).
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from .loopback import padded, serve, write_slowly

# The fake's clock for contacts it creates, so that fixture answers are exact.
CREATED_AT = 1714420800000
FIRST_NEW_ID = 1000001
TRICKLE_INTERVAL = 0.5

Answer = tuple[int, Any]

AUTHORIZE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize app · Drift (fake)</title>
<style>body{{font-family:sans-serif;margin:3rem auto;max-width:32rem;color:#1f2937}}
button{{font-size:1rem;padding:.6rem 1.2rem;margin-right:.5rem}}</style></head>
<body><main><h1>Authorize “{client_id}”</h1>
<p>The app asks for: contact_read, all_contact_read, conversation_read.</p>
<p>Organisation: <strong>{org_id}</strong></p>
<form method="post" action="/authorize">
<input type="hidden" name="redirect_uri" value="{redirect_uri}">
<input type="hidden" name="state" value="{state}">
<button type="submit" name="decision" value="allow">Authorize</button>
<button type="submit" name="decision" value="deny">Cancel</button>
</form></main></body></html>"""

SETTINGS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Integrations · Drift (fake)</title></head>
<body><main><h1>Drift integration settings</h1><p>Segment Source is connected.</p></main>
</body></html>"""



def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status, as a real server sends it."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"

class FakeDrift:
    """Drift's OAuth, conversations and contacts APIs, recording what it was asked.

    Bearer tokens let in: ``authorised(token)`` when given; else tokens the fake's OAuth
    issued, and ``token`` (with ``token=None`` and no OAuth: any token).
    """

    def __init__(self, client_id: str | None = None, client_secret: str | None = None,
                 token: str | None = None,
                 authorised: Callable[[str], bool] | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token = token
        self._authorised = authorised
        # OAuth
        self.authorizing_org = 5000883
        self.camel_case = False
        self.send_org_id = True
        self.expires_in = 7200
        self.grants: list[str] = []
        self.token_info_calls = 0
        self.authorize_requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        self._codes: dict[str, int] = {}
        self._access: dict[str, int] = {}
        self._refresh: dict[str, int] = {}
        self._refusing: set[int] = set()
        # conversations and meetings
        self.conversations: dict[str, dict[str, Any]] = {}
        self.listed: list[dict[str, Any]] = []
        self.meetings: list[dict[str, Any]] = []
        self.api_calls: list[tuple[str, str]] = []  # (conversation path, bearer token)
        # contacts
        self.contacts: dict[int, dict[str, Any]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.search_lag = 0.0
        self._created_at: dict[int, float] = {}
        self._next_id = FIRST_NEW_ID
        # what every call gets
        self.calls: list[dict[str, Any]] = []
        self.log: list[tuple[float, str, str]] = []  # (time, method, path)
        self.delay: dict[str, float] = {}
        self.delay_every = 0.0
        self.slow_calls: dict[str, list[float]] = {}  # "METHOD /path" -> seconds, one a call
        self.trickle: dict[str, float] = {}
        self.garbage: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.raw: dict[str, tuple[int, bytes, dict[str, str]]] = {}  # "METHOD /path" -> answer
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self._fail_remaining = 0
        self._fail_every = 0
        self._fail_status = 429
        self._retry_after: str | None = None
        self._fail_answer: dict[str, Any] | None = None
        # A search index that matches externalIds regardless of case (creating a contact
        # still needs an externalId no contact has exactly).
        self.case_insensitive_search = False
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

        self.server, self.url, self._thread = serve(Handler)
        self.authorize_url = self.url + "/authorize"
        self.settings_url = self.url + "/settings/integrations"

    def __enter__(self) -> FakeDrift:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests call --------------------------------------------------------------------

    def approve(self, authorize_location: str, org_id: int, decision: str = "allow") -> str:
        """Click Authorize (or Cancel) as org ``org_id``'s admin; the callback URL Drift
        sends the browser to."""
        self.authorizing_org = org_id
        query = {key: values[0] for key, values in
                 parse_qs(urlsplit(authorize_location).query).items()}
        answer = requests.post(self.authorize_url, allow_redirects=False, timeout=5, data={
            "redirect_uri": query["redirect_uri"], "state": query["state"],
            "decision": decision})
        assert answer.status_code == 302, answer.text
        return str(answer.headers["Location"])

    def revoke_access(self, org_id: int) -> None:
        """The org's current access tokens are rejected from now on (401)."""
        with self._lock:
            for token in [t for t, org in self._access.items() if org == org_id]:
                del self._access[token]

    def refuse_refresh(self, org_id: int) -> None:
        """Refreshing the org's token fails with invalid_grant (the app was uninstalled)."""
        with self._lock:
            self._refusing.add(org_id)

    def add_contact(self, contact: dict[str, Any]) -> None:
        """A contact Drift already has (``id``, ``createdAt``, ``attributes``)."""
        with self._lock:
            self.contacts[int(contact["id"])] = json.loads(json.dumps(contact))

    def fail_next(self, count: int, status: int = 429, retry_after: str | None = None,
                  answer: dict[str, Any] | None = None) -> None:
        """Fail the next ``count`` calls, whatever they ask (with ``answer`` as the body)."""
        with self._lock:
            self._fail_remaining, self._fail_status = count, status
            self._retry_after, self._fail_answer = retry_after, answer

    def fail_every(self, every: int, status: int = 429, retry_after: str | None = None,
                   answer: dict[str, Any] | None = None) -> None:
        """Fail every ``every``-th call (with ``answer`` as the body)."""
        with self._lock:
            self._fail_every, self._fail_status = every, status
            self._retry_after, self._fail_answer = retry_after, answer

    def by_external_id(self, external_id: str) -> dict[str, Any] | None:
        """The contact with this externalId, if any."""
        with self._lock:
            return self._find("externalId", external_id, lagging=False)

    def requests_made(self) -> list[str]:
        """``METHOD /path?query`` of every call, in order."""
        with self._lock:
            return [call["request"] for call in self.calls]

    def paths(self, prefix: str = "/") -> list[str]:
        """The paths (without query) of every call whose path starts with ``prefix``."""
        with self._lock:
            return [path for _, _, path in self.log if path.startswith(prefix)]

    def lookups(self) -> list[tuple[float, str]]:
        """(time, path) of every ``GET /conversations/{id}``."""
        with self._lock:
            return [(at, path) for at, method, path in self.log
                    if method == "GET" and path.startswith("/conversations/")
                    and path != "/conversations/list"]

    # -- the HTTP side ----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        length = int(request.headers.get("Content-Length", "0") or 0)
        raw = request.rfile.read(length) if length else b""
        url = urlsplit(request.path)
        item = url.path.rstrip("/").rsplit("/", 1)[-1]
        endpoint = f"{method} {url.path}"
        with self._lock:
            self.requests += 1
            self.log.append((time.time(), method, url.path))
            planned = self.raw.get(endpoint)
            delay = self.delay.get(item, 0.0) + self.delay_every
            late = self.slow_calls.get(endpoint)
            if late:
                delay += late.pop(0)
            trickle = self.trickle.get(item, 0.0)
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if planned is not None:
            status, payload, extra = planned
            headers.update(extra)
        else:
            status, answer = self._answer_recorded(request, method, url.path, url.query,
                                                   raw, item, headers)
            payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        if delay:
            with self._lock:
                self.in_flight += 1
            try:
                time.sleep(delay)
            finally:
                with self._lock:
                    self.in_flight -= 1
        if trickle:
            payload = padded(payload, trickle, TRICKLE_INTERVAL)
        head = [f"HTTP/1.1 {status} {reason(status)}", f"Content-Length: {len(payload)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
        if trickle:
            write_slowly(request.wfile, data, trickle, TRICKLE_INTERVAL)
            return
        try:
            request.wfile.write(data)
            request.wfile.flush()
        except OSError:
            pass  # the client gave up waiting (timeout)

    def _answer_recorded(self, request: BaseHTTPRequestHandler, method: str, path: str,
                         query: str, raw: bytes, item: str,
                         headers: dict[str, str]) -> tuple[int, Any]:
        """The answer to one call (JSON-able, or raw bytes), recorded in ``calls``."""
        with self._lock:
            try:
                body = json.loads(raw) if raw and path != "/oauth2/token" \
                    and path != "/authorize" else None
            except ValueError:
                body = None
            failing = self._fail_remaining > 0 or (
                self._fail_every and self.requests % self._fail_every == 0)
            forced = self.status.get(item)
            garbage = self.garbage.get(item)
            if failing:
                self._fail_remaining = max(0, self._fail_remaining - 1)
                self.failures += 1
                status = self._fail_status
                answer = self._fail_answer or {"error": {"type": "told_to_fail"}}
                if self._retry_after is not None:
                    headers["Retry-After"] = self._retry_after
            elif forced is not None:
                status, answer = forced, {"error": "told to fail"}
            elif garbage is not None:
                status, answer = 200, garbage
            else:
                status, answer = self._answer(method, path, query, raw, body, request.headers,
                                              headers)
            call: dict[str, Any] = {"request": f"{method} {request.path}"}
            if body is not None:
                call["body"] = body
            call["status"] = status
            if not isinstance(answer, bytes):
                # A copy as answered: later calls change the contacts it shows.
                call["answer"] = json.loads(json.dumps(answer))
            self.calls.append(call)
            return status, answer

    def _allowed(self, presented: str) -> bool:
        if self._authorised is not None:
            return self._authorised(presented)
        if presented in self._access:
            return True
        if self.client_id is not None or self.token is not None:
            return self.token is not None and presented == self.token
        return True

    def _answer(self, method: str, path: str, query: str, raw: bytes, body: Any,
                request_headers: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if path in ("/authorize", "/settings/integrations") or path.startswith(
                ("/oauth2/", "/app/")):
            return self._oauth(method, path, query, raw, headers)
        presented = request_headers.get("Authorization", "").removeprefix("Bearer ")
        if path.startswith("/conversations/") and method == "GET":
            self.api_calls.append((path, presented))
        if not self._allowed(presented):
            return 401, {"error": {"type": "authentication_error"}}
        params = {key: values[0] for key, values in parse_qs(query).items()}
        if path == "/conversations/list":
            return 200, {"data": self.listed, "pagination": {}}
        if path == "/users/meetings/org":
            return 200, {"data": self.meetings}
        if path.startswith("/conversations/") and method == "GET":
            conversation = self.conversations.get(path.rsplit("/", 1)[1])
            if conversation is None:
                return 404, {"error": "not_found"}
            return 200, {"data": conversation}
        parts = path.strip("/").split("/")
        if parts[0] != "contacts":
            return 404, {"error": {"type": "not_found", "path": path}}
        return self._contacts(method, parts, params, body)

    # -- OAuth ------------------------------------------------------------------------------

    def _oauth(self, method: str, path: str, query: str, raw: bytes,
               headers: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and path == "/authorize":
            params = {key: values[0] for key, values in parse_qs(query).items()}
            self.authorize_requests.append(params)
            page = AUTHORIZE_PAGE.format(**{key: html.escape(value) for key, value in {
                "client_id": params.get("client_id", ""), "org_id": str(self.authorizing_org),
                "redirect_uri": params.get("redirect_uri", ""),
                "state": params.get("state", "")}.items()})
            headers["Content-Type"] = "text/html; charset=utf-8"
            return 200, page.encode()
        if method == "POST" and path == "/authorize":
            form = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
            if form.get("decision") == "allow":
                code = "code-" + secrets.token_hex(8)
                self._codes[code] = self.authorizing_org
                back = {"code": code, "state": form.get("state", "")}
            else:
                back = {"error": "access_denied", "state": form.get("state", "")}
            headers["Location"] = form["redirect_uri"] + "?" + urlencode(back)
            return 302, b""
        if method == "GET" and path == "/settings/integrations":
            headers["Content-Type"] = "text/html; charset=utf-8"
            return 200, SETTINGS_PAGE.encode()
        if method == "POST" and path == "/oauth2/token":
            form = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
            return self._token(form)
        if method == "POST" and path == "/app/token_info":
            self.token_info_calls += 1
            token = json.loads(raw or b"{}").get("access_token")
            if token not in self._access:
                return 401, {"error": "invalid_token"}
            return 200, {"authenticated_userid": f"orgId:{self._access[token]}",
                         "scope": "contact_read conversation_read"}
        return 404, {"error": "not_found", "path": path}

    def _token(self, form: dict[str, str]) -> tuple[int, Any]:
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                   self.client_secret):
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if grant == "authorization_code":
            org_id = self._codes.pop(form.get("code", ""), None)
        elif grant == "refresh_token":
            org_id = self._refresh.pop(form.get("refresh_token", ""), None)
            if org_id in self._refusing:
                org_id = None
        else:
            return 400, {"error": "unsupported_grant_type"}
        if org_id is None:
            return 400, {"error": "invalid_grant"}
        access, refresh = "drift-at-" + secrets.token_hex(12), "drift-rt-" + secrets.token_hex(12)
        # A refresh retires the org's older access tokens, as a rotating provider may.
        for token in [t for t, org in self._access.items() if org == org_id]:
            del self._access[token]
        self._access[access], self._refresh[refresh] = org_id, org_id
        self.issued += [access, refresh]
        answer: dict[str, Any]
        if self.camel_case:
            answer = {"accessToken": access, "refreshToken": refresh, "tokenType": "bearer",
                      "expiresIn": self.expires_in}
        else:
            answer = {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                      "expires_in": self.expires_in}
        if self.send_org_id:
            answer["orgId"] = org_id
        return 200, answer

    # -- contacts ---------------------------------------------------------------------------

    def _contacts(self, method: str, parts: list[str], query: dict[str, str],
                  body: Any) -> Answer:
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

    def _find(self, attribute: str, value: Any, lagging: bool = True) -> dict[str, Any] | None:
        found = self._all(attribute, value, lagging)
        return found[0] if found else None

    def _all(self, attribute: str, value: Any, lagging: bool = True) -> list[dict[str, Any]]:
        if value is None:
            return []
        # A search may not show a contact created moments ago (search_lag seconds).
        cutoff = time.time() - self.search_lag if lagging else float("inf")
        return [contact for contact in self.contacts.values()
                if contact["attributes"].get(attribute) == value
                and self._created_at.get(contact["id"], 0.0) <= cutoff]

    def _create(self, body: Any) -> Answer:
        attributes = (body or {}).get("attributes")
        if not isinstance(attributes, dict) or not attributes.get("email"):
            return 400, {"error": {"type": "bad_request", "message": "email is required"}}
        external_id = attributes.get("externalId")
        if external_id is not None and self._find("externalId", external_id, lagging=False):
            return 409, {"error": {"type": "conflict", "message": "externalId exists"}}
        if external_id is None and self._find("email", attributes["email"], lagging=False):
            return 409, {"error": {"type": "conflict", "message": "email exists"}}
        contact = {"id": self._next_id, "createdAt": CREATED_AT, "attributes": dict(attributes)}
        self.contacts[self._next_id] = contact
        self._created_at[self._next_id] = time.time()
        self._next_id += 1
        return 200, {"data": contact}

    def _patch(self, contact: dict[str, Any], body: Any) -> Answer:
        attributes = (body or {}).get("attributes")
        if not isinstance(attributes, dict):
            return 400, {"error": {"type": "bad_request", "message": "attributes required"}}
        if any(isinstance(value, dict | list) for value in attributes.values()):
            return 400, {"error": {"type": "bad_request", "message": "values must be flat"}}
        external_id = attributes.get("externalId")
        other = self._find("externalId", external_id, lagging=False) \
            if external_id is not None else None
        if other is not None and other["id"] != contact["id"]:
            return 409, {"error": {"type": "conflict", "message": "externalId exists"}}
        contact["attributes"].update(attributes)
        return 200, {"data": contact}

    def _timeline(self, body: Any) -> Answer:
        body = body or {}
        if "contactId" in body:
            contact = self.contacts.get(body["contactId"])
        else:
            contact = self._find("externalId", body.get("externalId"), lagging=False)
        if contact is None:
            return 404, {"error": {"type": "not_found", "message": "no such contact"}}
        if not body.get("event"):
            return 400, {"error": {"type": "bad_request", "message": "event is required"}}
        event = {"id": len(self.timeline) + 1, "contactId": contact["id"],
                 "event": body["event"], "createdAt": body.get("createdAt")}
        self.timeline.append(event)
        return 200, {"data": event}
