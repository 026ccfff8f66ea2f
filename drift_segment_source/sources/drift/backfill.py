"""Backfill: turn Drift's stored conversations and meetings into the events they imply.

Each becomes the webhook Drift would have sent (``new_conversation``, ``new_meeting``) and is
stored like a live one, so it gets the same dedupe key and messageIds: what was already
received live is a duplicate here, and Segment drops anything sent twice. A window that
starts before the dedupe keys kept is refused (``check_window``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from drift_segment_source.drift_api import Credentials, DriftApi
from drift_segment_source.routing import Routing
from drift_segment_source.sources.door import Rejected
from drift_segment_source.store.store import Store

from .envelope import read_envelope
from .intake import HORIZON_MARGIN_SECONDS, take_in


def implied_webhooks(drift_api: DriftApi, credentials: Credentials, org_id: int,
                     since_ms: int, until_ms: int) -> Iterator[dict[str, Any]]:
    """The webhooks Drift would have sent for conversations and meetings in the window."""
    for conversation in drift_api.conversations_since(since_ms, credentials):
        if int(conversation.get("createdAt") or 0) <= until_ms:
            yield {"type": "new_conversation", "orgId": org_id, "data": conversation}
    for meeting in drift_api.meetings(since_ms, until_ms, credentials):
        yield {"type": "new_meeting", "orgId": org_id, "data": meeting}


def store_webhooks(store: Store, routing: Routing, webhooks: Iterable[dict[str, Any]],
                   on_each: Callable[[str], None] = lambda outcome: None) -> Counter[str]:
    """Take each webhook in like a live one (intake.py); counts by outcome (accepted,
    duplicate, or the error that refused it, e.g. invalid_data)."""
    outcomes: Counter[str] = Counter()
    for webhook in webhooks:
        try:
            taken = take_in(read_envelope(webhook), store, routing, received_at=store.now(),
                            keep_invalid=False)
            outcome = taken.status
        except Rejected as rejection:
            outcome = str(rejection.body["error"])
        outcomes[outcome] += 1
        on_each(outcome)
    return outcomes


class BeyondHorizon(ValueError):
    """The window reaches past the dedupe keys kept: events in it could be sent twice."""


def check_window(store: Store, since_ms: int) -> None:
    """Refuse a backfill window that starts before the dedupe horizon
    (docs/reliability.md#dedupe-horizon)."""
    horizon = store.dedupe_horizon()
    if horizon and since_ms / 1000 < horizon + HORIZON_MARGIN_SECONDS:
        earliest = datetime.fromtimestamp(horizon + HORIZON_MARGIN_SECONDS, UTC)
        raise BeyondHorizon(
            f"--since reaches past the dedupe keys kept (DEDUPE_RETENTION_DAYS): events "
            f"before {earliest:%Y-%m-%d %H:%M} UTC may have been delivered already and would "
            f"be sent twice. Use --since {earliest:%Y-%m-%dT%H:%M} or later.")
