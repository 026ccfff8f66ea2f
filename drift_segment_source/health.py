"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import config, metrics
from .store.store import Store, StoreUnavailable

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests. Never touches the store."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: store reachable, configuration usable; details for operators."""
    settings: dict[str, Any] = current_app.config
    store: Store = current_app.extensions["store"]
    checks: dict[str, Any] = {}
    problems = config.missing(settings)
    checks["config"] = {"ok": not problems, "missing": problems,
                        "dry_run": config.dry_run(settings),
                        "app_mode": config.app_mode(settings)}
    try:
        count, oldest = store.backlog()
        checks["store"] = {"ok": True, "backlog": count,
                           "oldest_pending_age_seconds":
                               None if oldest is None else round(time.time() - oldest, 3)}
    except StoreUnavailable as error:
        checks["store"] = {"ok": False, "error": str(error)}
    except Exception as error:  # any database error means "not ready", never a 500
        checks["store"] = {"ok": False, "error": type(error).__name__}
    try:
        # Delivery stops spending attempts on these until a probe succeeds (SPEC §5.9).
        # Counts only: a breaker's name can hold an org id.
        opened = store.open_breakers()
        checks["circuits"] = {"ok": True, "open": len(opened),
                              "segment": sum(key.startswith("segment:") for key in opened),
                              "drift_api": sum(key.startswith("drift:") for key in opened)}
    except Exception as error:  # reported by the store check above
        checks["circuits"] = {"ok": False, "error": type(error).__name__}
    checks.update(current_app.extensions["routing"].readiness())
    ready = checks["store"]["ok"] and checks["config"]["ok"]
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


@blueprint.get("/metrics")
def metrics_endpoint() -> Response | tuple[Response, int]:
    """Prometheus text exposition; behind ``METRICS_TOKEN`` (Bearer) when one is set."""
    required = current_app.config.get("METRICS_TOKEN")
    if required:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), str(required).encode()):
            answer = jsonify(error="unauthorized", message="METRICS_TOKEN required (Bearer).")
            answer.headers["WWW-Authenticate"] = "Bearer"
            return answer, 401
    body, content_type = metrics.exposition(current_app.extensions["store"])
    return Response(body, content_type=content_type)
