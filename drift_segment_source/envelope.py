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
    """The body as JSON the store and Segment can carry, or Rejected(400) saying why not."""
    try:
        document = json.loads(body, parse_constant=_no_constants, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise Rejected(400, "invalid_json", "Body is not UTF-8 encoded JSON.") from None
    except ValueError as error:
        raise Rejected(400, "invalid_json", f"Body is not valid JSON: {error}") from None
    except RecursionError:
        raise Rejected(400, "json_too_deep", f"Body is nested deeper than {MAX_DEPTH} levels.",
                       limit=MAX_DEPTH) from None
    # Counting brackets is cheap and bounds the depth, so most bodies are never walked.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:
        path = too_deep(document)
        if path is not None:
            raise Rejected(400, "json_too_deep", f"Body is nested deeper than {MAX_DEPTH} "
                           f"levels (at {path}).", limit=MAX_DEPTH)
    if SURROGATE_ESCAPE.search(body):
        path = lone_surrogate(document)
        if path is not None:
            raise Rejected(400, "invalid_unicode", f"{path} holds a lone UTF-16 surrogate "
                           "escape (a truncated emoji?), which UTF-8 cannot store.", path=path)
    return document


def _children(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(f"{path}.{key}" if path else str(key), child) for key, child in value.items()]
    if isinstance(value, list):
        return [(f"{path}[{index}]", child) for index, child in enumerate(value)]
    return []


def too_deep(document: Any) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH, if any."""
    pending = [(document, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                return path or "the body"
            pending.extend((child, child_path, depth + 1)
                           for child_path, child in _children(value, path))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate(document: Any) -> str | None:
    """The path of the first key or string holding a lone surrogate, if any."""
    pending = [(document, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path or "the body"
        elif isinstance(value, dict):
            for key in value:
                if _has_surrogate(key):
                    return f"a key under {path or 'the body'}"
        pending.extend((child, child_path) for child_path, child in _children(value, path))
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
