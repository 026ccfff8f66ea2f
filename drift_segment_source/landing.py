"""``GET /``: what the service does and how it is doing (the health surfaces' landing page),
and in app mode the Install button. The page helpers it shares with app mode are pages.py."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, current_app, render_template

from . import __version__, config
from .attention import Attention, attention_of, for_people, shown_host
from .pages import secure_headers
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


blueprint.after_request(secure_headers)
