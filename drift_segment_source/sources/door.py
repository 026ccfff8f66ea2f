"""What every door shares: the body, JSON, the checks of what can be carried, and refusals.

A door (``sources/<source>/webhooks.py``) reads the body (413, 408, 400 for a wrong media
type), parses it as strict JSON (400), checks its own authenticity (401), then that the JSON
is something the store and Segment can carry (400: lone surrogates, nesting), and answers
with a :class:`Rejected` or the :class:`Taken` outcome of storing it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected

from drift_segment_source.store.refusals import Refusals
from drift_segment_source.store.store import Unstorable

JSON_TYPES = ("application/json",)
# Drift's payloads are a few levels deep. Far deeper JSON is refused at the door: the
# Segment library serialises recursively and fails on it after we would have said 200.
MAX_DEPTH = 32
# A lone UTF-16 surrogate can only come from a \uD800–\uDFFF escape (raw surrogate bytes
# are not UTF-8); only bodies with such an escape are searched for one.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Rejected(Exception):
    """The request is refused; ``status`` and the JSON ``body`` say why."""

    def __init__(self, status: int, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": error, "message": message, **details}


@dataclass(frozen=True)
class Taken:
    """What became of a request that was not refused: ``accepted`` (stored now),
    ``duplicate`` (stored before) or ``ignored`` (not relayed, with the reason)."""

    status: str
    webhook_id: int | None = None
    reason: str | None = None
    outcome: str | None = None  # the metric's outcome label, when not ``status``

    def answer(self) -> dict[str, Any]:
        """The JSON answer."""
        answer: dict[str, Any] = {"status": self.status}
        if self.webhook_id is not None:
            answer["id"] = self.webhook_id
        if self.reason is not None:
            answer["reason"] = self.reason
        return answer


def storage_rejection(error: Exception) -> Rejected:
    """The answer to a request the store could not take: 400 if it refused the values,
    else 503 (the store is down; the sender may try again)."""
    if isinstance(error, Unstorable):
        return Rejected(400, "unstorable",
                        f"The database refused this webhook's values ({error}).")
    return Rejected(503, "store_unavailable", "The webhook could not be stored; please retry.")


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and Segment would refuse them.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # json reads 1e400 as infinity, which it would then write back as the non-JSON Infinity.
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


def parse_json(body: bytes) -> Any:
    """The body as JSON, or Rejected(400) saying why it is not."""
    try:
        # Strictly UTF-8 (json.loads would guess UTF-16 or UTF-32 from raw bytes, and let
        # escapes the checks below look for in UTF-8 slip through).
        return json.loads(body.decode("utf-8"), parse_constant=_no_constants,
                          parse_float=_finite_float)
    except UnicodeDecodeError:
        raise Rejected(400, "invalid_json", "Body is not UTF-8 encoded JSON.") from None
    except ValueError as error:
        raise Rejected(400, "invalid_json", f"Body is not valid JSON: {error}") from None
    except RecursionError:
        raise Rejected(400, "json_too_deep", f"Body is nested deeper than {MAX_DEPTH} levels.",
                       limit=MAX_DEPTH) from None


@dataclass(frozen=True)
class WalksNeeded:
    """What a cheap look at a body's bytes says its documents need walked for."""
    depth: bool
    surrogates: bool

    @classmethod
    def of(cls, body: bytes) -> WalksNeeded:
        return cls(depth=body.count(b"{") + body.count(b"[") > MAX_DEPTH,
                   surrogates=SURROGATE_ESCAPE.search(body) is not None)


def check_carriable(needed: WalksNeeded, document: Any) -> None:
    """Rejected(400) for JSON the store or Segment cannot carry: nesting deeper than
    MAX_DEPTH, a lone UTF-16 surrogate. Run after the token check: only Drift's bodies are
    walked, and only when a cheap look at the bytes (``WalksNeeded.of(body)``, once per body
    however many documents a batch holds) says they may need it."""
    if needed.depth:
        path = too_deep(document)
        if path is not None:
            raise Rejected(400, "json_too_deep", f"Body is nested deeper than {MAX_DEPTH} "
                           f"levels (at {path}).", limit=MAX_DEPTH)
    if needed.surrogates:
        path = lone_surrogate(document)
        if path is not None:
            raise Rejected(400, "invalid_unicode", f"{path} holds a lone UTF-16 surrogate "
                           "escape (a truncated emoji?), which UTF-8 cannot store.", path=path)


# A walk keeps, for each value, its parent's entry and its key; the path is spelled out
# only for the value at fault (spelling every path costs memory quadratic in the body).
Trail = tuple[Any, Any] | None
PATH_KEY_CHARACTERS = 40


def spelled(trail: Trail) -> str:
    """``data.items[3].name`` for a trail, keys cut to PATH_KEY_CHARACTERS."""
    parts: list[str] = []
    while trail is not None:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else "." + str(key)[:PATH_KEY_CHARACTERS])
    return "".join(reversed(parts)).lstrip(".") or "the body"


def _children(value: Any, trail: Trail) -> list[tuple[Any, Trail]]:
    if isinstance(value, dict):
        return [(child, (trail, key)) for key, child in value.items()]
    if isinstance(value, list):
        return [(child, (trail, index)) for index, child in enumerate(value)]
    return []


def too_deep(document: Any) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH, if any."""
    pending: list[tuple[Any, Trail, int]] = [(document, None, 0)]
    while pending:
        value, trail, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                return spelled(trail)
            pending.extend((child, child_trail, depth + 1)
                           for child, child_trail in _children(value, trail))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate(document: Any) -> str | None:
    """The path of the first key or string holding a lone surrogate, if any."""
    pending: list[tuple[Any, Trail]] = [(document, None)]
    while pending:
        value, trail = pending.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return spelled(trail)
        elif isinstance(value, dict):
            for key in value:
                if _has_surrogate(key):
                    return f"a key under {spelled(trail)}"
        pending.extend(_children(value, trail))
    return None


def read_body() -> bytes:
    """The raw body, refusing oversize bodies before reading them and non-JSON media types."""
    limit: int = current_app.config["MAX_BODY_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, "payload_too_large", f"Body is over {limit} bytes.", limit=limit)
    # Read up to one byte past the limit so a chunked body without Content-Length is caught
    # too; a stream read may return less than asked, hence the loop.
    chunks: list[bytes] = []
    size = 0
    ended = True
    try:
        while size <= limit:
            chunk = request.stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (ClientDisconnected, OSError):
        ended = False  # a chunked body broke off
    if not ended or (request.content_length is not None and size < request.content_length):
        # The body stopped before its end: the client went away, or it was too slow and
        # gunicorn_conf.DeadlineWorker cut it off to free the thread.
        seconds = current_app.config["REQUEST_READ_TIMEOUT_SECONDS"]
        raise Rejected(408, "request_timeout",
                       f"The body did not arrive in full within {seconds:g} s.",
                       seconds=seconds)
    body = b"".join(chunks)
    if len(body) > limit:
        raise Rejected(413, "payload_too_large", f"Body is over {limit} bytes.", limit=limit)
    media_type = request.mimetype
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise Rejected(400, "unsupported_content_type",
                       f"Content-Type must be application/json, got {media_type or 'none'!r}.")
    return body


def count_refusal(reason: str) -> None:
    """Count a request refused for its token, for the health surfaces; never fails it."""
    try:
        refusals: Refusals = current_app.extensions["refusals"]
        refusals.count(reason)
    except Exception:  # a count is not worth a refused answer turning into a 500
        logging.getLogger("drift_segment_source.webhooks").debug(
            "refusal not counted", exc_info=True)
