"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics``."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import config, metrics
from .attention import Attention, attention_of
from .store.store import StoreUnavailable

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests. Never touches the store."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 while the service can take webhooks (store reachable, a verification
    token set). The body says what needs a person (``warnings``, from ``attention.py``):
    readiness is about taking traffic, so those never turn it into a 503."""
    settings: dict[str, Any] = current_app.config
    checks: dict[str, Any] = {}
    problems = config.missing(settings)
    checks["config"] = {"ok": not problems, "missing": problems,
                        "dry_run": config.dry_run(settings),
                        "app_mode": config.app_mode(settings)}
    attention: Attention | None = None
    try:
        attention = attention_of(current_app)
        checks["store"] = {"ok": True, "backlog": attention.backlog,
                           "held": attention.held_count,
                           "oldest_pending_age_seconds": attention.oldest_pending_age_seconds}
        # Counts only: /readyz answers anyone, and a circuit's name can hold an org id.
        opened = attention.counts()["open_circuits"]
        # "ok" is the truth for a monitor; readiness (the status code) is about taking
        # webhooks, which an open circuit does not stop.
        checks["circuits"] = {"ok": not sum(opened.values()), "open": sum(opened.values()),
                              "segment": opened["segment"], "drift_api": opened["drift_api"]}
    except StoreUnavailable as error:
        checks["store"] = {"ok": False, "error": str(error)}
    except Exception as error:  # any database error means "not ready", never a 500
        checks["store"] = {"ok": False, "error": type(error).__name__}
    checks.update(current_app.extensions["routing"].readiness())
    ready = checks["store"]["ok"] and checks["config"]["ok"]
    warnings = list(problems)
    if not checks["store"]["ok"]:
        warnings.append(f"The store cannot be read ({checks['store']['error']}): webhooks get "
                        "503 until it can; check DATABASE_URL and the database server.")
    if attention is not None:
        warnings += attention.warnings()
    body = {"status": "ready" if ready else "not ready", "warnings": warnings,
            "attention": None if attention is None else attention.counts(), "checks": checks}
    return jsonify(body), 200 if ready else 503


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
