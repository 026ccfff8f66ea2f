"""Reading a webhook body: JSON, then the envelope Drift wraps every event in.

``{"type": "<event type>", "orgId": <int>, "token": "<verification token>", "data": {...}}``
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

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
class Envelope:
    """A webhook whose envelope is sound; ``data`` is not validated yet."""

    event_type: str
    org_id: int
    data: dict[str, Any]
    raw: dict[str, Any]

    @cached_property
    def stored_payload(self) -> str:
        """The webhook as stored: compact JSON without the verification token."""
        kept = {key: value for key, value in self.raw.items() if key != "token"}
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


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


def read_envelope(document: Any) -> Envelope:
    """Check the envelope's fields, or Rejected(400) naming each problem."""
    if not isinstance(document, dict):
        raise Rejected(400, "invalid_envelope", "Body must be a JSON object.")
    problems: dict[str, str] = {}
    event_type = document.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        problems["type"] = "required: the Drift event type as a non-empty string"
    org_id = document.get("orgId")
    if isinstance(org_id, str) and org_id.isascii() and org_id.isdigit():
        # Length first: int() of a 5,000-digit string raises (Python's 4,300-digit limit).
        org_id = int(org_id) if len(org_id) <= 19 else 2**63
    if isinstance(org_id, bool) or not isinstance(org_id, int) or org_id <= 0:
        problems["orgId"] = "required: the Drift organisation id as a positive integer"
    elif org_id >= 2**63:
        problems["orgId"] = "too large for a 64-bit Drift id"
    data = document.get("data")
    if not isinstance(data, dict):
        problems["data"] = "required: the event's data as a JSON object"
    if problems:
        raise Rejected(400, "invalid_envelope", "The webhook envelope is incomplete.",
                       fields=problems)
    assert isinstance(event_type, str) and isinstance(org_id, int) and isinstance(data, dict)
    return Envelope(event_type=event_type, org_id=org_id, data=data, raw=document)
