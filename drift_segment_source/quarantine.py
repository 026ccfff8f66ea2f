"""Replaying quarantined payloads (422s) once a translator accepts them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from flask import Flask
from marshmallow import ValidationError

from .envelope import read_envelope
from .routing import Routing
from .store import Store
from .translators import TRANSLATORS, dedupe_key


def retry_quarantined(app: Flask, ids: Sequence[int] | None = None) -> dict[str, int]:
    """Validate quarantined payloads again; store those that pass. Counts by outcome."""
    store: Store = app.extensions["store"]
    routing: Routing = app.extensions["routing"]
    outcome = {"accepted": 0, "duplicate": 0, "still_invalid": 0}
    for quarantine_id, payload, received_at in store.quarantined_payloads(ids):
        envelope = read_envelope(json.loads(payload))
        translator = TRANSLATORS[envelope.event_type]
        try:
            data = translator.validate(envelope.data)
        except ValidationError:
            outcome["still_invalid"] += 1
            continue
        key = dedupe_key(envelope.org_id, envelope.event_type, translator.identity(data))
        stored = store.accept(envelope.org_id, envelope.event_type, key, payload,
                              hold_reason=routing.route(envelope.org_id).hold,
                              received_at=received_at)
        store.release_quarantined(quarantine_id)
        outcome["accepted" if stored is not None else "duplicate"] += 1
    return outcome
