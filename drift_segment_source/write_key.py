"""The write-key page: the org that just authorised the app saves its Segment write key.

Only the session bound at the OAuth callback can use it, for that org only, for an hour;
the form carries a session-bound CSRF token. Saving releases the org's held webhooks and
sends the admin back to Drift's integration settings.
"""

from __future__ import annotations

import hmac
import logging
import re
import time

from flask import Blueprint, current_app, redirect, render_template, request, session

from .oauth import START_AGAIN, PageAnswer, app_routing, error_page
from .orgs import REGION_HOSTS, Org
from .pages import message_page, no_store

blueprint = Blueprint("write_key", __name__)
log = logging.getLogger("drift_segment_source.write_key")

# Segment write keys are 32 letters and digits; allow some room either way.
WRITE_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{20,64}")
# Where a Segment workspace lives decides the API host: EU events sent to the US host vanish.
# The page names each region by Segment's own host for it, which admins find in Segment's
# documentation; messages go to the host the operator configured for it (orgs.py).
REGION_NAMES = {"us": "United States", "eu": "European Union"}
SETUP_SECONDS = 3600


def bound_org() -> int | None:
    """The org this session authorised within the last hour, if any."""
    org_id, authorised_at = session.get("org_id"), session.get("authorised_at")
    if not isinstance(org_id, int) or not isinstance(authorised_at, int | float):
        return None
    return org_id if time.time() - authorised_at < SETUP_SECONDS else None


@blueprint.route("/setup", methods=["GET", "POST"])
def form() -> PageAnswer:
    """Show the form (GET) or save the write key (POST)."""
    org_id = bound_org()
    org = app_routing().directory.get(org_id) if org_id is not None else None
    if org is None:
        return message_page(
            403, "Your setup session has ended",
            "The write key can only be set right after authorising the app in Drift, from the "
            "same browser. Install again to continue; your settings are kept.", START_AGAIN)
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
    app_routing().directory.save_write_key(org.org_id, write_key, region)
    log.info("org saved its Segment write key", extra={"org_id": org.org_id, "region": region})
    # Done: changing the key again takes a new install, so this session can do no more.
    session.clear()
    return redirect(current_app.config["DRIFT_SETTINGS_URL"], 303)


def render(org: Org, errors: dict[str, str] | None = None, region: str | None = None,
           status: int = 200) -> tuple[str, int]:
    """The write-key form for ``org``."""
    page = render_template(
        "setup.html", org=org, errors=errors or {}, region=region or org.segment_region or "us",
        regions=[(name, label, REGION_HOSTS[name]) for name, label in REGION_NAMES.items()],
        csrf_token=session.get("csrf", ""))
    return page, status


blueprint.after_request(no_store)
blueprint.register_error_handler(Exception, error_page)
