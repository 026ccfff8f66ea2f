"""What the install pages share: the way back to the start, the routing, the error page.

``oauth.py`` (install → Drift → callback) and ``write_key.py`` (the setup form) both use
these; keeping them here lets neither import the other.
"""

from __future__ import annotations

import logging

from flask import current_app
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from drift_segment_source.pages import message_page

from .org_routing import AppRouting

log = logging.getLogger("drift_segment_source.oauth")

START_AGAIN = ("Install again", "/oauth/install")

PageAnswer = tuple[str, int] | BaseResponse


def app_routing() -> AppRouting:
    """The app-mode routing of the current app."""
    routing: AppRouting = current_app.extensions["routing"]
    return routing


def error_page(error: Exception) -> tuple[str, int]:
    """Errors on the install pages get a page, never a stack trace (the log has it)."""
    if isinstance(error, HTTPException):
        return message_page(error.code or 500, error.name, error.description or "")
    log.exception("unhandled error on an install page")
    return message_page(500, "Something went wrong",
                        "The error was logged. Nothing secret was shown; please try again.",
                        START_AGAIN)
