"""What the service's HTML pages share (the landing page is landing.py).

Pages are server-rendered (``templates/``, one layout, one stylesheet in ``static/``) and
need no JavaScript; each answer carries headers that keep it out of frames and other sites.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, current_app, render_template


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

