"""The Flask application factory: settings, store, routing and blueprints, wired once."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config, logs, startup
from .app_mode.org_routing import AppRouting
from .attention import forget_stale_circuits
from .clock import SYSTEM_CLOCK, Clock
from .delivery.loop import Delivery
from .delivery.settings import DeliverySettings, RetentionSettings
from .delivery.stitching import Stitching
from .destinations.segment import Transport, make_transport
from .drift_api import DriftApi
from .routing import NO_DRIFT_TOKEN, SelfHostedRouting
from .store.database_clock import DatabaseClock
from .store.db import default_database_url, make_engine
from .store.faults import make_store
from .store.refusals import Refusals
from .store.store import Store

log = logging.getLogger("drift_segment_source.app")

# The only hosts where app mode may run over plain http: a developer's own machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def create_app(config_overrides: dict[str, Any] | None = None, *, clock: Clock = SYSTEM_CLOCK,
               segment_transport: Transport | None = None) -> Flask:
    """Build the WSGI app; ``config_overrides`` replace environment settings, ``clock`` and
    ``segment_transport`` replace the host's clock and the HTTP transport (tests, drills)."""
    settings = config.load_settings(overrides=config_overrides)
    app = Flask(__name__, instance_path=config.instance_path(settings))
    app.config.update(settings)
    if config.app_mode(settings) and not settings.get("SECRET_KEY"):
        raise config.ConfigError(config.SECRET_KEY_MISSING)
    public_token = config.public_token_problem(settings)
    if public_token:
        raise config.ConfigError(public_token)
    try:
        Stitching.from_settings(settings)
    except (ValueError, re.error) as error:
        raise config.ConfigError(f"IDENTITY_STITCHING / STITCHING_ANONYMOUS_PATTERN: {error}"
                                 ) from None
    app.config["SECRET_KEY"] = settings.get("SECRET_KEY")
    check_public_url(settings)
    trust_proxies(app, settings["TRUSTED_PROXIES"])

    logs.configure(settings["LOG_LEVEL"])
    logs.REDACTOR.add_configured(config.secret_values(settings))

    try:
        database_url = settings.get("DATABASE_URL") or default_database_url(app.instance_path)
        engine = make_engine(database_url,
                             connect_timeout=settings["DATABASE_CONNECT_TIMEOUT_SECONDS"],
                             statement_timeout=settings["DATABASE_STATEMENT_TIMEOUT_SECONDS"],
                             lock_timeout=settings["DATABASE_LOCK_TIMEOUT_SECONDS"])
    except Exception as error:
        reason = startup.explain_database(error, settings)
        if reason is None:
            raise
        raise startup.StartupError(reason) from error
    if clock is SYSTEM_CLOCK and engine.dialect.name == "postgresql":
        clock = DatabaseClock(clock, engine)  # every process and host on one time
    store = Store(engine, clock)
    app.extensions["clock"] = clock
    app.extensions["segment_transport"] = segment_transport
    app.extensions["store"] = make_store(store, settings["STORE_FAULT"])
    app.extensions["refusals"] = Refusals(engine, clock.wall)
    if config.app_mode(settings):
        app.extensions["routing"] = AppRouting.from_settings(settings, store)
    else:
        app.extensions["routing"] = SelfHostedRouting(settings)
    app.extensions["delivery_wakeup"] = threading.Event()

    from . import client_script, health, landing, status
    from .app_mode import oauth, write_key
    from .sources.drift import webhooks as drift_webhooks
    from .sources.segment import webhooks as segment_webhooks

    app.register_blueprint(drift_webhooks.blueprint)
    app.register_blueprint(segment_webhooks.blueprint)
    app.register_blueprint(client_script.blueprint)
    app.register_blueprint(health.blueprint)
    landing.init_app(app)
    app.register_blueprint(status.blueprint)
    if config.app_mode(settings):
        oauth.init_app(app)
        app.register_blueprint(write_key.blueprint)
    register_request_ids(app)
    register_json_errors(app)
    return app


def check_public_url(settings: dict[str, Any]) -> None:
    """App mode sends OAuth codes and the session cookie to PUBLIC_URL: https unless local."""
    public_url = settings.get("PUBLIC_URL")
    if not public_url or not config.app_mode(settings):
        return
    parts = urlsplit(str(public_url))
    if parts.hostname and (parts.scheme == "https"
                           or (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS)):
        return
    raise config.ConfigError(
        f"PUBLIC_URL must be an https URL in app mode, got {public_url!r}: Drift sends the "
        "OAuth code there and the session cookie travels with it. Only localhost and "
        "127.0.0.1 may use http.")


def trust_proxies(app: Flask, proxies: int) -> None:
    """Read the client's scheme, host and address from the headers of ``proxies`` proxies."""
    if proxies < 0:
        raise config.ConfigError(f"TRUSTED_PROXIES must be 0 or more, got {proxies}")
    if proxies:
        # Heroku's router ends TLS and forwards plain http: without this, redirect URLs
        # built from the request would say http and the session cookie would not be Secure.
        # Each proxy appends to X-Forwarded-*; only the last `proxies` entries are theirs,
        # anything before them came from the client and is not believed.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)


def make_delivery(app: Flask) -> Delivery:
    """A delivery loop for this app's store and routing (made after fork, per process)."""
    settings: dict[str, Any] = dict(app.config)
    store: Store = app.extensions["store"]
    delivery = Delivery(
        DeliverySettings.from_settings(settings),
        RetentionSettings.from_settings(settings),
        store=store,
        routing=app.extensions["routing"],
        transport=app.extensions["segment_transport"] or make_transport(
            settings["SEGMENT_TRANSPORT"], settings["SEGMENT_TIMEOUT_SECONDS"]),
        drift_api=DriftApi(settings["DRIFT_API_URL"], settings["DRIFT_TIMEOUT_SECONDS"]),
        stitching=Stitching.from_settings(settings),
        clock=app.extensions["clock"],
        wakeup=app.extensions["delivery_wakeup"],
    )
    forget_stale_circuits(app)
    if settings.get("DRIFT_ACCESS_TOKEN"):
        # Rows held for want of a Drift token can go now that there is one.
        store.release_held(NO_DRIFT_TOKEN)
    if settings.get("SEGMENT_WRITE_KEY") and not config.app_mode(settings):
        # Rows a process without a write key held can go now, and again now and then while
        # such a process may still run beside this one (app mode releases per org).
        delivery.housekeeping.release_for_write_key = True
        delivery.housekeeping.release_held_for_write_key()
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
