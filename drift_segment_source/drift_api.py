"""The Drift API edge: the conversation (and, for identity stitching, contact) lookups some
events need, cached; and the contact writes of the Segment → Drift direction.

Failures are classified, not retried at length here: the delivery loop reschedules only the
affected rows (with backoff) so one slow lookup never stalls the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from cachetools import TTLCache
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import __version__, metrics
from .logs import REDACTOR

# A conversation's contact never changes; its status does, so a push reads a fresh copy
# within a few minutes at most.
CACHE_SECONDS = 300
CACHE_SIZE = 10_000
# What Drift says about a refused write goes into the row's reason (a dead letter, the
# status page): enough to act on, never a whole body.
SAID_MAX_CHARACTERS = 300


@dataclass(frozen=True)
class DriftApiError(Exception):
    """A lookup failed; ``retryable`` says whether trying later can help."""

    status: int | None
    message: str
    retryable: bool
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"Drift API {self.status or 'network error'}: {self.message}"


@dataclass(frozen=True)
class TokenRejected(DriftApiError):
    """Drift answered 401: the access token is wrong, revoked or expired. ``renewable``:
    whether the token can be refreshed (app mode), or only replaced by its operator."""

    renewable: bool = True


class Missing:
    """Nothing cached (``None`` is a cached answer: Drift does not know the contact)."""


MISSING = Missing()


@dataclass(frozen=True)
class Credentials:
    """How to call the Drift API for one org: a token and, in app mode, a way to renew it."""

    access_token: str
    refresh: Callable[[], str] | None = None
    renew_first: bool = False


def make_session() -> requests.Session:
    """A pooled session with one quick retry for transient errors (made after fork)."""
    session = requests.Session()
    retry = Retry(
        total=1,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=("GET",),
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=8))
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=8))
    session.headers["User-Agent"] = f"drift-segment-source/{__version__}"
    return session


def seconds(header: str) -> float | None:
    """A Retry-After in seconds, or None when it is not a plain number ("²" is a digit to
    ``str.isdigit`` but not to ``float``)."""
    try:
        value = float(header) if header.isascii() else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def what_drift_said(response: requests.Response) -> str | None:
    """Drift's own words in a refusal's body (``error.message``, ``message``, ``errors[]``…),
    redacted as log lines are and cut to SAID_MAX_CHARACTERS; None when it said nothing."""
    said: str | None = None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            said = message_in(response.json())
        except (ValueError, RecursionError):
            said = None
    elif response.headers.get("Content-Type", "").startswith("text/plain"):
        said = response.text
    if not said:
        return None
    # One line of printable text: the reason is shown on pages and in logs.
    said = " ".join("".join(char if char.isprintable() else " " for char in said).split())
    said = REDACTOR.scrub(said[:4096])
    if len(said) > SAID_MAX_CHARACTERS:
        said = said[:SAID_MAX_CHARACTERS - 1].rstrip() + "…"
    return said or None


def message_in(body: Any) -> str | None:
    """The message of a JSON error body, in the shapes APIs use."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        found = error.get("message") or error.get("type")
        if isinstance(found, str):
            return found
    if isinstance(error, str):
        return error
    for name in ("message", "error_description", "detail"):
        if isinstance(body.get(name), str):
            return str(body[name])
    errors = body.get("errors")
    if isinstance(errors, list):
        messages = [item if isinstance(item, str) else item.get("message")
                    for item in errors if isinstance(item, str | dict)]
        return "; ".join(message for message in messages if isinstance(message, str)) or None
    return None


class DriftApi:
    """Conversation lookups and contact writes against ``DRIFT_API_URL`` with per-org
    credentials."""

    def __init__(self, base_url: str, timeout: float,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or make_session()
        self._cache: TTLCache[tuple[int, str], dict[str, Any]] = TTLCache(CACHE_SIZE,
                                                                          CACHE_SECONDS)
        # A contact's externalId changes when the site identifies it: minutes, not hours.
        self._contacts: TTLCache[tuple[int, str], dict[str, Any] | None] = TTLCache(
            CACHE_SIZE, CACHE_SECONDS)
        self._lock = threading.Lock()

    def cached_conversation(self, org_id: int,
                            conversation_id: int | str) -> dict[str, Any] | None:
        """The conversation if a recent lookup fetched it, without a call."""
        with self._lock:
            return self._cache.get((org_id, str(conversation_id)))

    def conversation(self, org_id: int, conversation_id: int | str,
                     credentials: Credentials) -> dict[str, Any]:
        """``GET /conversations/{id}``'s ``data``; raises DriftApiError."""
        key = (org_id, str(conversation_id))
        cached = self.cached_conversation(org_id, conversation_id)
        if cached is not None:
            return cached
        body = self._get(f"/conversations/{conversation_id}", "conversations", credentials)
        conversation = body.get("data") if isinstance(body, dict) else None
        if not isinstance(conversation, dict):
            raise DriftApiError(200, "conversation answer has no data object", retryable=True)
        with self._lock:
            self._cache[key] = conversation
        return conversation

    def cached_contact(self, org_id: int, contact_id: int | str
                       ) -> dict[str, Any] | None | Missing:
        """The contact if a recent lookup fetched it (None: Drift did not know it), or
        MISSING when there was no recent lookup."""
        with self._lock:
            return self._contacts.get((org_id, str(contact_id)), MISSING)

    def contact(self, org_id: int, contact_id: int | str,
                credentials: Credentials) -> dict[str, Any] | None:
        """``GET /contacts/{id}``'s ``data``, or None when Drift does not know the contact
        (a 404: the message is sent without userId, never lost); raises DriftApiError."""
        cached = self.cached_contact(org_id, contact_id)
        if not isinstance(cached, Missing):
            return cached
        try:
            body = self._get(f"/contacts/{contact_id}", "contacts", credentials)
        except DriftApiError as error:
            if error.status != 404:
                raise
            body = None
        found = body.get("data") if isinstance(body, dict) else None
        if body is not None and not isinstance(found, dict):
            raise DriftApiError(200, "contact answer has no data object", retryable=True)
        with self._lock:
            self._contacts[(org_id, str(contact_id))] = found
        return found

    def conversations_since(self, since_ms: int, credentials: Credentials
                            ) -> Iterator[dict[str, Any]]:
        """Conversations created at or after ``since_ms``, newest first, page by page."""
        cursor: str | None = None
        while True:
            query = {"limit": 50, **({"next": cursor} if cursor else {})}
            body = self._get("/conversations/list?" + urlencode(query), "conversations_list",
                             credentials)
            for conversation in body.get("data") or []:
                if int(conversation.get("createdAt") or 0) < since_ms:
                    return  # the list is newest first: everything after is older
                yield conversation
            cursor = (body.get("pagination") or {}).get("next")
            if not cursor:
                return

    def meetings(self, min_start_ms: int, max_start_ms: int, credentials: Credentials
                 ) -> list[dict[str, Any]]:
        """Meetings of the org starting in the window (Drift keeps about 30 days)."""
        query = urlencode({"min_start_time": min_start_ms, "max_start_time": max_start_ms})
        body = self._get(f"/users/meetings/org?{query}", "meetings", credentials)
        found: list[dict[str, Any]] = body.get("data") or []
        return found

    # -- contact writes (Segment → Drift, docs/segment-to-drift.md; scope contact_write) -----

    def contact_by_external_id(self, external_id: str, credentials: Credentials
                               ) -> dict[str, Any] | None:
        """The contact whose externalId is exactly ``external_id``
        (``GET /contacts?idType=external&id=…``), or None when Drift has none.

        Drift's search may answer contacts whose externalId only looks alike (another case):
        they are not this user's, so writing to one would give one user's traits to another.
        """
        query = urlencode({"idType": "external", "id": external_id})
        try:
            body = self._get(f"/contacts?{query}", "contacts_by_external_id", credentials)
        except DriftApiError as error:
            if error.status != 404:
                raise
            return None
        found = body.get("data") if isinstance(body, dict) else None
        # Drift answers a list, as for ?email=; a single object is read too.
        contacts = [found] if isinstance(found, dict) else found
        if not isinstance(contacts, list):
            raise DriftApiError(200, "contact answer has no data", retryable=True)
        exact = [contact for contact in contacts
                 if isinstance(contact, dict) and contact.get("id") is not None
                 and isinstance(contact.get("attributes"), dict)
                 and contact["attributes"].get("externalId") == external_id]
        return exact[0] if exact else None

    def update_contact(self, contact_id: int | str, attributes: dict[str, Any],
                       credentials: Credentials) -> Any:
        """``PATCH /contacts/{id}`` with ``{"attributes": …}`` (only those change)."""
        return self._call("PATCH", f"/contacts/{contact_id}", "contacts_update", credentials,
                          {"attributes": attributes})

    def create_contact(self, attributes: dict[str, Any], credentials: Credentials) -> Any:
        """``POST /contacts`` with ``{"attributes": …}`` (``email`` required by Drift)."""
        return self._call("POST", "/contacts", "contacts_create", credentials,
                          {"attributes": attributes})

    def timeline_event(self, event: dict[str, Any], credentials: Credentials) -> Any:
        """``POST /contacts/timeline``: ``{contactId | externalId, event, createdAt}``."""
        return self._call("POST", "/contacts/timeline", "contacts_timeline", credentials, event)

    def _get(self, path: str, endpoint: str, credentials: Credentials) -> Any:
        return self._call("GET", path, endpoint, credentials)

    def _call(self, method: str, path: str, endpoint: str, credentials: Credentials,
              body: dict[str, Any] | None = None) -> Any:
        token = credentials.access_token
        if credentials.renew_first and credentials.refresh:
            token = credentials.refresh()
        for renewed in (credentials.renew_first, True):
            response = self._request(path, endpoint, token, method, body)
            if response.status_code == 401 and credentials.refresh and not renewed:
                token = credentials.refresh()
                continue
            break
        if method != "GET" and response.ok and not response.content.strip():
            return None  # a write Drift confirmed without a body
        return self._answer(response, renewable=credentials.refresh is not None)

    def _request(self, path: str, endpoint: str, token: str, method: str = "GET",
                 body: dict[str, Any] | None = None) -> requests.Response:
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            metrics.DRIFT_API_CALLS.labels(endpoint=endpoint, status="network").inc()
            raise DriftApiError(None, type(error).__name__, retryable=True) from None
        metrics.DRIFT_API_CALLS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        return response

    @staticmethod
    def _answer(response: requests.Response, renewable: bool) -> Any:
        status = response.status_code
        if status == 401:
            raise TokenRejected(401, "access token rejected", retryable=True,
                                renewable=renewable)
        if status == 429 or status >= 500:
            raise DriftApiError(status, response.reason or "", retryable=True,
                                retry_after=seconds(response.headers.get("Retry-After", "")))
        if status >= 400:
            said = what_drift_said(response)
            reason = response.reason or ""
            raise DriftApiError(status, f"{reason}: {said}" if said else reason,
                                retryable=False)
        try:
            return response.json()
        except (ValueError, RecursionError):
            raise DriftApiError(status, "answer is not JSON", retryable=True) from None
