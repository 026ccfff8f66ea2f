"""Replaying quarantined payloads (422s) once a translator accepts them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from flask import Flask

from drift_segment_source.routing import Routing
from drift_segment_source.sources.door import Rejected
from drift_segment_source.store.store import Store

from .envelope import read_envelope
from .intake import take_in


def retry_quarantined(app: Flask, ids: Sequence[int] | None = None) -> dict[str, int]:
    """Take quarantined payloads in again (intake.py); release those stored. Counts by
    outcome: accepted, duplicate, still_invalid, or the error that refused one."""
    store: Store = app.extensions["store"]
    routing: Routing = app.extensions["routing"]
    outcome = {"accepted": 0, "duplicate": 0, "still_invalid": 0}
    for quarantine_id, payload, received_at in store.quarantined_payloads(ids):
        try:
            taken = take_in(read_envelope(json.loads(payload)), store, routing,
                            received_at=received_at, keep_invalid=False)
        except Rejected as rejection:
            error = str(rejection.body["error"])
            key = "still_invalid" if error == "invalid_data" else error
            outcome[key] = outcome.get(key, 0) + 1
            continue
        if taken.status in ("accepted", "duplicate"):
            store.release_quarantined(quarantine_id)
        outcome[taken.status] = outcome.get(taken.status, 0) + 1
    return outcome
