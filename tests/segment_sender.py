"""What Segment's Webhooks destination sends: signed bodies (see docs/segment-to-drift.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

SECRET = "segment-shared-secret-test"


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
