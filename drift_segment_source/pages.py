"""The service's HTML pages: the landing page, and what every page shares.

Pages are server-rendered (``templates/``, one layout, one stylesheet in ``static/``) and
need no JavaScript; each answer carries headers that keep it out of frames and other sites.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, render_template

from . import __version__, config
from .attention import Attention, attention_of, for_people, shown_host
from .sources.drift.translators import TRANSLATORS

blueprint = Blueprint("pages", __name__)


def init_app(app: Flask) -> None:
    """Serve the landing page (all modes)."""
    app.register_blueprint(blueprint)

    @app.template_filter("utc_hour")
    def utc_hour(epoch: float) -> str:
        return time.strftime("%H:00", time.gmtime(epoch))

    @app.context_processor
    def page_globals() -> dict[str, Any]:
        return {"version": __version__, "app_mode": config.app_mode(app.config)}


@blueprint.get("/")
def landing() -> str:
    """What the service does and how it is doing; in app mode, the Install button."""
    settings = current_app.config
    try:
        attention: Attention | None = attention_of(current_app)
    except Exception:  # the page still says what the service is when the store is down
        attention = None
    warnings = config.missing(settings) + (attention.warnings() if attention else [])
    return render_template(
        "index.html",
        dry_run=config.dry_run(settings),
        missing=config.missing(settings),
        attention=attention,
        warnings=warnings,
        segment_host=shown_host(settings["SEGMENT_HOST"]),
        for_people=for_people,
        events=sorted(TRANSLATORS),
    )


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def secure_headers(response: Response) -> Response:
    """No framing, no content sniffing, no referrer; forms post here (or back to Drift)."""
    # The write-key form's answer redirects to Drift's settings, and browsers hold that
    # redirect to form-action too.
    form_targets = " ".join(["'self'", origin(current_app.config["DRIFT_SETTINGS_URL"])])
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; "
        f"form-action {form_targets}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def no_store(response: Response) -> Response:
    """Pages that show or take secrets stay out of every cache and the back-forward history."""
    response.headers["Cache-Control"] = "no-store"
    return secure_headers(response)


def message_page(status: int, title: str, message: str, action: tuple[str, str] | None = None,
                 ) -> tuple[str, int]:
    """A page that explains what went wrong (or right) and what to do next."""
    return render_template("message.html", title=title, message=message, action=action,
                           status=status), status


blueprint.after_request(secure_headers)
