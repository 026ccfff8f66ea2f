"""Installing the app into a Drift org: ``/oauth/install`` → Drift → ``/oauth/callback``.

The ``state`` sent to Drift is signed and expires, and it carries a nonce that is also kept
in this browser's session and used once: a forged, stale, replayed or foreign state is
refused. After the code exchange the browser gets a setup grant for the org that just
authorised (``grants.py``: kept in the store, its token in the session), and only that org's
write key can be set with it, once (``write_key.py``).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    current_app,
    has_request_context,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from drift_segment_source.pages import message_page, no_store

from .install_pages import START_AGAIN, PageAnswer, app_routing, error_page
from .oauth_client import OAuthError

blueprint = Blueprint("oauth", __name__)
log = logging.getLogger("drift_segment_source.oauth")

STATE_SALT = "drift-segment-source/oauth-state"
# Long enough to log in to Drift on the way, short enough that a leaked URL soon expires.
STATE_MAX_AGE_SECONDS = 600


def init_app(app: Flask) -> None:
    """App mode: the install flow's first pages and a session cookie fit for them."""
    public_url = app.config.get("PUBLIC_URL") or ""
    app.config.update(
        SESSION_COOKIE_NAME="dss_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax: Drift's redirect back to the callback is a top-level GET, which carries it.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=public_url.startswith("https://"),
    )
    app.session_interface = SessionCookies()
    app.register_blueprint(blueprint)


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie, ``Secure`` whenever the browser came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure with an https PUBLIC_URL, or when this request was https (the scheme a
        trusted proxy reports, when PUBLIC_URL is unset and the URL comes from the request)."""
        if super().get_cookie_secure(app):
            return True
        return has_request_context() and request.is_secure


def state_serializer() -> URLSafeTimedSerializer:
    """Signs OAuth states with SECRET_KEY, under a salt of their own."""
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=STATE_SALT)


def redirect_uri() -> str:
    """Where Drift sends the browser back: PUBLIC_URL's callback, else this host's."""
    public_url = current_app.config.get("PUBLIC_URL")
    if public_url:
        return str(public_url).rstrip("/") + url_for("oauth.callback")
    return url_for("oauth.callback", _external=True)


@blueprint.get("/oauth/install")
def install() -> BaseResponse:
    """Send the browser to Drift's authorize page with a fresh, session-bound state."""
    nonce = secrets.token_urlsafe(24)
    session["oauth_nonce"] = nonce
    query = urlencode({
        "response_type": "code",
        "client_id": current_app.config["DRIFT_CLIENT_ID"],
        "redirect_uri": redirect_uri(),
        "state": state_serializer().dumps({"nonce": nonce}),
    })
    authorize_url = str(current_app.config["DRIFT_AUTHORIZE_URL"])
    return redirect(f"{authorize_url}{'&' if '?' in authorize_url else '?'}{query}", 302)


@blueprint.get("/oauth/callback")
def callback() -> PageAnswer:
    """Check the state, trade the code for the org's tokens, then ask for the write key."""
    refusal = check_state(request.args.get("state", ""))
    if request.args.get("error"):
        return message_page(
            403, "The app was not authorised",
            "Drift says the authorisation was cancelled or refused, so nothing was installed. "
            "You can start again whenever you are ready.", START_AGAIN)
    if refusal is not None:
        return refusal
    code = request.args.get("code", "")
    if not code:
        return message_page(400, "Drift sent no authorisation code",
                            "Start the install again from this service or from Drift.",
                            START_AGAIN)
    oauth = app_routing().oauth
    try:
        grant = oauth.exchange(code, redirect_uri())
        org_id = grant.org_id or oauth.org_of(grant.access_token)
    except OAuthError as error:
        log.warning("authorisation code exchange failed",
                    extra={"status": error.status, "reason": str(error)})
        if error.refused:
            return message_page(
                400, "Drift did not accept the authorisation",
                "The authorisation code was refused: it may have expired or been used "
                "already. Start the install again.", START_AGAIN)
        return message_page(
            502, "Drift could not be reached",
            "Drift did not answer as expected while finishing the install. Nothing was "
            "saved; please try again in a minute.", START_AGAIN)
    routing = app_routing()
    routing.directory.save_tokens(org_id, grant)
    log.info("org authorised the app", extra={"org_id": org_id})
    session.clear()
    # The session names no org: the grant (revoking the org's earlier ones) does, server-side.
    session.update(setup_grant=routing.grants.issue(org_id), csrf=secrets.token_urlsafe(32))
    return redirect(url_for("write_key.form"), 303)


def check_state(state: str) -> tuple[str, int] | None:
    """None when ``state`` is this session's live state; else the refusal page. Single use."""
    expected = session.pop("oauth_nonce", None)
    if not isinstance(expected, str):
        return message_page(
            400, "This install was not started in this browser",
            "The answer from Drift does not belong to an install started here (or it was "
            "already used). Start the install again from this browser.", START_AGAIN)
    try:
        payload: Any = state_serializer().loads(state, max_age=STATE_MAX_AGE_SECONDS)
    except SignatureExpired:
        return message_page(400, "The install took too long",
                            "For your safety an install must finish within 10 minutes. "
                            "Start it again.", START_AGAIN)
    except BadSignature:
        payload = None
    nonce = payload.get("nonce") if isinstance(payload, dict) else None
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.encode()):
        return message_page(400, "The install could not be verified",
                            "The answer from Drift does not match the install started in this "
                            "browser. Start the install again.", START_AGAIN)
    return None


blueprint.after_request(no_store)
blueprint.register_error_handler(Exception, error_page)
