"""Reading a webhook body: JSON, then the envelope Drift wraps every event in.

``{"type": "<event type>", "orgId": <int>, "token": "<verification token>", "data": {...}}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from drift_segment_source.sources.door import Rejected


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
