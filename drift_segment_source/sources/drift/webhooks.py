"""``POST /webhooks/drift``: receive → verify → validate → store, then answer.

Checks run in this order (docs/reliability.md#what-every-request-gets): size (413), JSON
(400, including JSON the store or Segment cannot carry), token (401), envelope (400), type
(200 ignored), data schema (422).
``200 accepted`` is sent only after the commit (intake.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from drift_segment_source import metrics
from drift_segment_source.routing import current_routing
from drift_segment_source.sources.door import (
    Rejected,
    WalksNeeded,
    check_carriable,
    count_refusal,
    parse_json,
    read_body,
)
from drift_segment_source.store.refusals import DRIFT_MISSING, DRIFT_WRONG
from drift_segment_source.store.store import Store

from .envelope import Envelope, read_envelope
from .intake import take_in
from .translators import TRANSLATORS
from .verification import token_is_valid

blueprint = Blueprint("webhooks", __name__)
log = logging.getLogger("drift_segment_source.webhooks")


@blueprint.post("/webhooks/drift")
def receive() -> tuple[Response, int]:
    """Answer one Drift webhook."""
    started = time.perf_counter()
    event_type: str | None = None
    try:
        body = read_body()
        document = parse_json(body)
        check_token(document)
        check_carriable(WalksNeeded.of(body), document)
        envelope = read_envelope(document)
        event_type = envelope.event_type
        status, answer, outcome = store_webhook(envelope)
    except Rejected as rejection:
        status, answer = rejection.status, rejection.body
        outcome = str(rejection.body["error"])
    label = metrics.type_label(event_type, known=event_type in TRANSLATORS)
    metrics.WEBHOOKS.labels(type=label, outcome=outcome).inc()
    # Refusals are logged at WARNING in aggregate (store/refusals.py): one line per request
    # would let a flood of bad tokens fill the log.
    log.log(
        logging.DEBUG if status == 401 else logging.INFO,
        "webhook %s",
        outcome,
        extra={
            "outcome": outcome,
            "type": label,
            "status": status,
            "webhook_id": answer.get("id"),
            "request_id": g.get("request_id"),
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return jsonify(answer), status


def check_token(document: Any) -> None:
    """Rejected(401) unless the header or body token is one of the configured tokens."""
    presented = [request.headers.get("X-Verification-Token")]
    if isinstance(document, dict):
        presented.append(document.get("token"))
    if not token_is_valid(presented, current_app.config["DRIFT_VERIFICATION_TOKEN"]):
        given = any(isinstance(token, str) and token for token in presented)
        count_refusal(DRIFT_WRONG if given else DRIFT_MISSING)
        raise Rejected(401, "unauthorized", "Missing or wrong Drift verification token.")


def store_webhook(envelope: Envelope) -> tuple[int, dict[str, Any], str]:
    """Take the webhook in (intake.py); (status, JSON answer, metric outcome)."""
    store: Store = current_app.extensions["store"]
    taken = take_in(envelope, store, current_routing(), received_at=store.now())
    if taken.status == "accepted":
        current_app.extensions["delivery_wakeup"].set()
    return 200, taken.answer(), taken.outcome or taken.status
