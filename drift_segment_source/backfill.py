"""Backfill: turn Drift's stored conversations and meetings into the events they imply.

Each becomes the webhook Drift would have sent (``new_conversation``, ``new_meeting``) and is
stored like a live one, so it gets the same dedupe key and messageIds: what was already
received live is a duplicate here, and Segment drops anything sent twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from marshmallow import ValidationError

from .drift_api import Credentials, DriftApi
from .routing import Routing
from .store import Store
from .translators import TRANSLATORS, dedupe_key


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
    """Store each webhook like a live one; counts of accepted, duplicate and invalid."""
    outcomes: Counter[str] = Counter()
    for webhook in webhooks:
        translator = TRANSLATORS[webhook["type"]]
        try:
            data = translator.validate(webhook["data"])
        except ValidationError:
            outcome = "invalid"
        else:
            key = dedupe_key(webhook["orgId"], webhook["type"], translator.identity(data))
            stored = store.accept(webhook["orgId"], webhook["type"], key,
                                  json.dumps(webhook, separators=(",", ":")),
                                  hold_reason=routing.route(webhook["orgId"]).hold)
            outcome = "accepted" if stored is not None else "duplicate"
        outcomes[outcome] += 1
        on_each(outcome)
    return outcomes
