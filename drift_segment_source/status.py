"""``GET /status``: the operator's page (admin only): counts by type and state, backlog
age, delivery latency, recent failures, and a chart of the last 24 hours.

Closed unless ``ADMIN_TOKEN`` is set. The token is accepted as ``Authorization: Bearer``
(scripts; ``/status.json``) or as the password of HTTP Basic auth, which browsers ask for
themselves, so the page needs no JavaScript.
"""

from __future__ import annotations

import base64
import hmac
import statistics
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from .attention import attention_of
from .pages import message_page, no_store, secure_headers
from .store.store import Store

blueprint = Blueprint("status", __name__)

DAY_HOURS = 24


def presented_token() -> str:
    """The admin token the request carries (Bearer, or Basic auth's password), or ''."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


@blueprint.before_request
def admin_only() -> Any:
    """403 while admin is disabled; 401 (asking for Basic auth) without the right token."""
    configured = current_app.config.get("ADMIN_TOKEN")
    if not configured:
        if request.path.endswith(".json"):
            return jsonify(error="admin_disabled", message="Set ADMIN_TOKEN to open it."), 403
        return message_page(403, "Status page closed",
                            "The status page is disabled. Set ADMIN_TOKEN to open it.")
    if not hmac.compare_digest(presented_token().encode(), configured.encode()):
        answer = jsonify(error="unauthorized", message="Admin token required.")
        answer.status_code = 401
        answer.headers["WWW-Authenticate"] = 'Basic realm="drift-segment-source status"'
        return answer
    return None


def percentile(values: list[float], share: float) -> float | None:
    """The ``share`` quantile of ``values`` (None when there are none)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def snapshot(app: Flask) -> dict[str, Any]:
    """Everything the status page shows, as plain data."""
    store: Store = app.extensions["store"]
    attention = attention_of(app)
    now = time.time()
    counts = store.counts()
    types = sorted({event_type for event_type, _ in counts})
    states = ["pending", "held", "delivered", "dead", "dry_run"]
    waiting, oldest = store.backlog()
    latencies = store.latencies(now - 3600)
    this_hour = int(now // 3600)
    hourly = store.hourly((this_hour - DAY_HOURS + 1) * 3600)
    hours = [
        {"hour": hour, "received": hourly["received"].get(hour, 0),
         "delivered": hourly["delivered"].get(hour, 0)}
        for hour in range(this_hour - DAY_HOURS + 1, this_hour + 1)
    ]
    return {
        "counts": {event_type: {state: counts.get((event_type, state), 0) for state in states}
                   for event_type in types},
        "states": states,
        "warnings": attention.warnings(),
        "attention": attention.details(),
        "backlog": {"waiting": waiting,
                    "oldest_age_seconds": None if oldest is None else round(now - oldest, 1),
                    "held_by_reason": attention.counts()["held_by_reason"]},
        "latency_last_hour": {"deliveries": len(latencies),
                              "p50_seconds": percentile(latencies, 0.5),
                              "p95_seconds": percentile(latencies, 0.95)},
        "hours": hours,
        "dead_letters": store.dead_letters(10),
        "retrying": store.retrying(10),
        # Only destinations configured now: a circuit of an old SEGMENT_HOST is not news.
        "open_circuits": attention.details()["open_circuits"],
    }


@blueprint.get("/status")
def status_page() -> Response:
    """The status page."""
    data = snapshot(current_app)
    peak = max([1] + [max(hour["received"], hour["delivered"]) for hour in data["hours"]])
    html = render_template("status.html", data=data, peak=peak, now=time.time())
    return no_store(Response(html))


@blueprint.get("/status.json")
def status_json() -> Response:
    """The same figures for scripts."""
    return no_store(jsonify(snapshot(current_app)))


blueprint.after_request(secure_headers)
