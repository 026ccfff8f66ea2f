"""The Flask application factory: settings, store, routing and blueprints, wired once."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import config, logs
from .db import default_database_url, make_engine
from .delivery import Delivery
from .drift_api import DriftApi
from .faults import make_store
from .orgs import AppRouting
from .routing import NO_DRIFT_TOKEN, SelfHostedRouting
from .segment_out import make_transport
from .store import Store

log = logging.getLogger("drift_segment_source.app")


def create_app(config_overrides: dict[str, Any] | None = None) -> Flask:
    """Build the WSGI app; ``config_overrides`` replace environment settings (tests)."""
    app = Flask(__name__, instance_relative_config=True)
    settings = config.load_settings(overrides=config_overrides)
    app.config.update(settings)
    problems = config.missing(settings)
    if config.app_mode(settings) and not settings.get("SECRET_KEY"):
        raise config.ConfigError("app mode (DRIFT_CLIENT_ID/SECRET set) requires SECRET_KEY")
    app.config["SECRET_KEY"] = settings.get("SECRET_KEY")

    logs.configure(settings["LOG_LEVEL"])
    logs.REDACTOR.add_configured(config.secret_values(settings))

    database_url = settings.get("DATABASE_URL") or default_database_url(app.instance_path)
    app.config["DATABASE_URL"] = database_url
    clock = settings.get("CLOCK")
    store = Store(make_engine(database_url), **({"clock": clock} if clock else {}))
    app.extensions["store"] = make_store(store, settings["STORE_FAULT"])
    if config.app_mode(settings):
        app.extensions["routing"] = AppRouting.from_settings(settings, store)
    else:
        app.extensions["routing"] = SelfHostedRouting(settings)
    app.extensions["delivery_wakeup"] = threading.Event()

    from . import client_script, health, oauth, pages, status, webhooks

    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(client_script.blueprint)
    app.register_blueprint(health.blueprint)
    pages.init_app(app)
    app.register_blueprint(status.blueprint)
    if config.app_mode(settings):
        oauth.init_app(app)
    register_request_ids(app)
    register_json_errors(app)

    if config.dry_run(settings):
        log.warning("DRY-RUN: SEGMENT_WRITE_KEY is not set; messages are logged, not sent")
    for problem in problems:
        log.warning("configuration incomplete: %s", problem)
    return app


def make_delivery(app: Flask) -> Delivery:
    """A delivery loop for this app's store and routing (made after fork, per process)."""
    settings: dict[str, Any] = dict(app.config)
    store: Store = app.extensions["store"]
    clock = settings.get("CLOCK")
    delivery = Delivery(
        settings=settings,
        store=store,
        routing=app.extensions["routing"],
        transport=settings.get("TRANSPORT") or make_transport(settings["SEGMENT_TRANSPORT"],
                                                              settings["SEGMENT_TIMEOUT_SECONDS"]),
        drift_api=DriftApi(settings["DRIFT_API_URL"], settings["DRIFT_TIMEOUT_SECONDS"]),
        **({"clock": clock} if clock else {}),
    )
    if settings.get("DRIFT_ACCESS_TOKEN"):
        # Rows held for want of a Drift token can go now that there is one.
        store.release_held(NO_DRIFT_TOKEN)
    if isinstance(delivery.routing, AppRouting):
        # A webhook that raced an org's write-key save may have been held after the release.
        delivery.routing.release_ready()
    return delivery


def register_request_ids(app: Flask) -> None:
    """Give every request an id (the caller's X-Request-Id, or a new one) for the logs."""

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming[:64] if incoming.isprintable() and incoming else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response


def register_json_errors(app: Flask) -> None:
    """Errors raised by Flask itself (404, 405, 413...) answer in JSON too."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        code = error.code or 500
        name = (error.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=error.description), code

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> tuple[Response, int]:
        # Never a stack trace or a request body in the answer; the log has the trace.
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return jsonify(error="internal_error", message="Unexpected error; it was logged."), 500
