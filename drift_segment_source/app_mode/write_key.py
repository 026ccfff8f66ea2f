"""The write-key page: the org that just authorised the app saves its Segment write key.

Only the browser given a setup grant at the OAuth callback can use it, for that org only,
until the key is saved, the org installs again or the grant expires (``grants.py``); the
form carries a session-bound CSRF token. The key is checked before it is saved: an
empty batch (it creates no event) is posted with it to the region's host, and a key Segment
refuses is a form error; when Segment cannot answer, the key is saved and the next page says
it could not be checked. Saving releases the org's held webhooks and sends the admin back to
Drift's integration settings.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from drift_segment_source.destinations.segment import HttpTransport, SegmentError
from drift_segment_source.pages import message_page, no_store

from .install_pages import START_AGAIN, PageAnswer, app_routing, error_page
from .orgs import REGION_HOSTS, Org

blueprint = Blueprint("write_key", __name__)
log = logging.getLogger("drift_segment_source.write_key")

# Segment write keys are 32 letters and digits; allow some room either way.
WRITE_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{20,64}")
# Where a Segment workspace lives decides the API host: EU events sent to the US host vanish.
# The page names each region by Segment's own host for it, which admins find in Segment's
# documentation; messages go to the host the operator configured for it (orgs.py).
REGION_NAMES = {"us": "United States", "eu": "European Union"}
# Segment answers an empty batch in milliseconds; an admin should not wait long for a host
# that does not answer, since the key is saved anyway.
CHECK_TIMEOUT_SECONDS = 5
# What Segment answers to a key it does not accept: the form says so and nothing is saved.
REFUSED = frozenset({400, 401, 403})


@dataclass(frozen=True)
class KeyCheck:
    """What Segment said about a write key: refused (with its status), or not checked (why)."""

    refused: int | None = None
    unchecked: str | None = None


def check_write_key(write_key: str, host: str) -> KeyCheck:
    """Post an empty batch (it creates no event) with ``write_key`` to ``host``."""
    try:
        HttpTransport(CHECK_TIMEOUT_SECONDS).post(write_key, host, [])
    except SegmentError as error:
        if error.status in REFUSED:
            return KeyCheck(refused=error.status)
        if error.status is None:
            return KeyCheck(unchecked="Segment could not be reached")
        return KeyCheck(unchecked=f"Segment answered HTTP {error.status}")
    return KeyCheck()


def session_ended() -> tuple[str, int]:
    """The page for a browser whose setup grant is gone (or never was)."""
    return message_page(
        403, "Your setup session has ended",
        "The write key can only be set right after authorising the app in Drift, from the "
        "same browser. Install again to continue; your settings are kept.", START_AGAIN)


@blueprint.route("/setup", methods=["GET", "POST"])
def form() -> PageAnswer:
    """Show the form (GET) or save the write key (POST)."""
    routing = app_routing()
    org_id = routing.grants.org_of(session.get("setup_grant"))
    org = routing.directory.get(org_id) if org_id is not None else None
    if org is None:
        return session_ended()
    if request.method == "GET":
        return render(org)
    submitted, expected = request.form.get("csrf_token", ""), session.get("csrf")
    if not (isinstance(expected, str) and expected
            and hmac.compare_digest(submitted.encode(), expected.encode())):
        return message_page(
            403, "This form has expired",
            "The form was not sent from the page this service gave you, or the page is too "
            "old. Reload the page and submit it again.", ("Reload the form", "/setup"))
    write_key = request.form.get("write_key", "").strip()
    region = request.form.get("region", "")
    errors = {}
    if not WRITE_KEY_FORMAT.fullmatch(write_key):
        errors["write_key"] = ("Enter the write key exactly as Segment shows it: 20 to 64 "
                               "letters and digits, usually 32.")
    if region not in REGION_NAMES:
        errors["region"] = "Choose where your Segment workspace is hosted."
    if errors:
        return render(org, errors, region, 422)
    directory = routing.directory
    check = check_write_key(write_key, directory.hosts[region])
    if check.refused is not None:
        log.info("Segment refused an org's write key",
                 extra={"org_id": org.org_id, "region": region, "status": check.refused})
        errors["write_key"] = (f"Segment refused this write key (HTTP {check.refused}). Copy "
                               "it again from your source's settings, and check the region.")
        return render(org, errors, region, 422)
    # Only the request that uses the grant up saves: a copy of this browser's cookie posted
    # at the same time (or later) finds it gone.
    if not routing.grants.use(session.get("setup_grant"), org.org_id):
        session.clear()
        return session_ended()
    directory.save_write_key(org.org_id, write_key, region)
    log.info("org saved its Segment write key", extra={
        "org_id": org.org_id, "region": region, "unchecked": check.unchecked})
    # Done: changing the key again takes a new install (the grant is gone, server-side).
    session.clear()
    settings_url = current_app.config["DRIFT_SETTINGS_URL"]
    if check.unchecked is not None:
        # Not a block: Segment being down must not stop an install; delivery retries.
        return message_page(
            200, "Write key saved, but not checked",
            f"{check.unchecked} to check the key, so it was saved as you entered it. Events "
            "are delivered once Segment answers; if the key turns out wrong, they wait as "
            "dead letters and you can install again with the right one.",
            ("Continue to Drift", settings_url))
    return redirect(settings_url, 303)


def render(org: Org, errors: dict[str, str] | None = None, region: str | None = None,
           status: int = 200) -> tuple[str, int]:
    """The write-key form for ``org``, with its Segment → Drift URL and secret."""
    page = render_template(
        "setup.html", org=org, errors=errors or {}, region=region or org.segment_region or "us",
        regions=[(name, label, REGION_HOSTS[name]) for name, label in REGION_NAMES.items()],
        csrf_token=session.get("csrf", ""),
        segment_secret=app_routing().segment_secret(org.org_id),
        segment_url=segment_url(org.org_id))
    return page, status


def segment_url(org_id: int) -> str:
    """The org's Segment → Drift endpoint, as Segment must call it: PUBLIC_URL's, else this
    host's."""
    path = url_for("segment_webhooks.receive_for_org", org_id=org_id)
    public_url = current_app.config.get("PUBLIC_URL")
    if public_url:
        return str(public_url).rstrip("/") + path
    return url_for("segment_webhooks.receive_for_org", org_id=org_id, _external=True)


blueprint.after_request(no_store)
blueprint.register_error_handler(Exception, error_page)
