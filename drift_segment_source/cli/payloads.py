"""Payload files: ``translate`` (dry-run: what a file becomes) and ``replay`` (post files to
a running service)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .. import config
from .base import fail, main
from .recorded import RECORDED_SUFFIX, recorded_answers_of, recorded_session

# A fixture folder holds, beside each webhook, what it must become and what Drift answered.
NOT_PAYLOADS = (".segment.json", RECORDED_SUFFIX, ".drift.json")


def payload_files(paths: tuple[str, ...]) -> Iterator[Path]:
    """Webhook files under the given files or folders (fixtures' expected files skipped)."""
    for name in paths:
        path = Path(name)
        candidates = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for candidate in candidates:
            if not candidate.name.endswith(NOT_PAYLOADS):
                yield candidate


def is_segment_message(document: Any) -> bool:
    """A Segment message (or a batch of them, as Webhooks (Actions) sends it), not a Drift
    webhook: a Segment call ``type`` and no Drift envelope (``orgId``, ``data``)."""
    from ..sources.segment.translators import NOT_RELAYED, SEGMENT_TRANSLATORS

    if isinstance(document, list):
        return bool(document) and all(is_segment_message(item) for item in document)
    return (isinstance(document, dict) and "orgId" not in document and "data" not in document
            and (document.get("type") in SEGMENT_TRANSLATORS
                 or document.get("type") in NOT_RELAYED))


def drift_actions(message: dict[str, Any], received_ms: int) -> dict[str, Any]:
    """What a Segment message becomes in Drift: its actions, or why it is ignored."""
    from ..sources.segment.translators import NotRelayed
    from ..sources.segment.translators import translate as to_actions
    from ..sources.segment.webhooks import loop_guard

    ignored = loop_guard(message)
    if ignored is not None:
        return {"ignored": ignored}
    try:
        return {"drift": [action.describe() for action in to_actions(message, received_ms)]}
    except NotRelayed as reason:
        return {"ignored": str(reason)}


class Translation:
    """What ``translate`` needs once for every file: settings, routing, the message builder."""

    def __init__(self, settings: dict[str, Any], received: datetime) -> None:
        from ..delivery.stitching import Stitching
        from ..destinations.segment import MessageBuilder
        from ..drift_api import DriftApi
        from ..routing import SelfHostedRouting

        self.settings = settings
        self.received = received
        self.routing = SelfHostedRouting(settings)
        self.drift_api = DriftApi(settings["DRIFT_API_URL"], settings["DRIFT_TIMEOUT_SECONDS"])
        self.builder = MessageBuilder()
        self.stitching = Stitching.from_settings(settings)

    def drift_webhook(self, path: Path, document: Any) -> dict[str, Any]:
        """The Segment batch a Drift webhook file becomes, as delivery would build it; the
        Drift API answers recorded beside the file stand in for the API when present."""
        from ..delivery.to_segment import contact_id_of, segment_messages
        from ..drift_api import Credentials, DriftApi
        from ..sources.drift.envelope import read_envelope
        from ..sources.drift.translators import TRANSLATORS

        envelope = read_envelope(document)
        translator = TRANSLATORS.get(envelope.event_type)
        if translator is None:
            return {"file": str(path), "ignored": envelope.event_type}
        data = translator.validate(envelope.data)
        drift_api = self.drift_api
        credentials = self.routing.drift_credentials(envelope.org_id)
        recorded = recorded_answers_of(path)
        if recorded is not None:
            drift_api = DriftApi(self.settings["DRIFT_API_URL"], 1.0,
                                 session=recorded_session(recorded, self.settings["DRIFT_API_URL"]))
            credentials = credentials or Credentials("recorded-answers")
        received_at = self.received.timestamp()
        conversation = None
        needed = translator.conversation_needed(data)
        if needed is not None:
            if credentials is None:
                raise click.ClickException(
                    f"{path}: needs GET /conversations/{needed}; set DRIFT_ACCESS_TOKEN, or "
                    f"record Drift's answer beside it ({path.stem}{RECORDED_SUFFIX})")
            conversation = drift_api.conversation(envelope.org_id, needed, credentials)
        contact = None
        if (self.stitching is not None and credentials is not None
                and translator.contact_facts(data).external_id is None):
            # As delivery does it: the webhook's own facts, else the Drift API's.
            contact_id = contact_id_of(translator, envelope.org_id, data, received_at,
                                       conversation)
            if contact_id is not None:
                contact = drift_api.contact(envelope.org_id, contact_id, credentials)
        built = segment_messages(translator, envelope.org_id, data, received_at, self.builder,
                                 conversation=conversation, stitching=self.stitching,
                                 contact=contact)
        batch = ([built.link[1]] if built.link else []) + built.messages
        return {"file": str(path), "batch": batch}

    def segment_messages(self, path: Path, document: Any) -> dict[str, Any]:
        """The Drift actions a Segment message file becomes (the Segment → Drift direction)."""
        received_ms = int(self.received.timestamp() * 1000)
        if isinstance(document, list):
            return {"file": str(path),
                    "messages": [drift_actions(item, received_ms) for item in document]}
        return {"file": str(path), **drift_actions(document, received_ms)}


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--received-at", type=click.DateTime(), default=None,
              help="Receipt time for events without their own time (default: now, UTC).")
def translate(files: tuple[str, ...], received_at: datetime | None) -> None:
    """Print the Segment messages each webhook file becomes (nothing is sent); for a
    Segment message file, the Drift actions it becomes. Drift API answers recorded beside a
    file (``<case>.drift-api.json``) answer its lookups."""
    from ..sources.door import Rejected, parse_json

    try:
        settings = config.load_settings()
    except config.ConfigError as error:
        fail(str(error), error)
    translation = Translation(settings, (received_at or datetime.now(UTC)).replace(tzinfo=UTC))
    failed = False
    for path in payload_files(files):
        try:
            document = parse_json(path.read_bytes())
            segment = is_segment_message(document)
            shown = (translation.segment_messages(path, document) if segment
                     else translation.drift_webhook(path, document))
        except Rejected as rejection:
            click.echo(json.dumps({"file": str(path), **rejection.body}), err=True)
            failed = True
            continue
        except Exception as error:
            messages_text = getattr(error, "messages", None) or str(error)
            click.echo(json.dumps({"file": str(path), "error": messages_text}, default=str),
                       err=True)
            failed = True
            continue
        indent = None if not segment and "ignored" in shown else 2
        click.echo(json.dumps(shown, indent=indent, ensure_ascii=False))
    if failed:
        sys.exit(1)


def default_url() -> str:
    """The webhook endpoint of a service running here with these settings ($PORT)."""
    try:
        port = config.load_settings()["PORT"]
    except config.ConfigError:
        port = 8000
    return f"http://127.0.0.1:{port}/webhooks/drift"


def refusal_hint(url: str, refused: int) -> str:
    """Which setting a 401 from the service points at."""
    if "/webhooks/segment" in url:
        return (f"{refused} refused with 401: sign with the service's SEGMENT_SHARED_SECRET "
                "(set it here too, or pass --secret)")
    return (f"{refused} refused with 401: send the service's own DRIFT_VERIFICATION_TOKEN: set "
            "it here too (scripts/cli reads instance/local.env, which scripts/run writes), or "
            "pass --token")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--url", default=None,
              help="The running service's webhook endpoint  [default: "
                   "http://127.0.0.1:$PORT/webhooks/drift]")
@click.option("--token", envvar="DRIFT_VERIFICATION_TOKEN", default=None,
              help="Send this verification token (header) instead of the files' own.")
@click.option("--secret", envvar="SEGMENT_SHARED_SECRET", default=None,
              help="Sign each body with this Segment shared secret (X-Signature), for "
                   "--url .../webhooks/segment.")
def replay(paths: tuple[str, ...], url: str | None, token: str | None,
           secret: str | None) -> None:
    """Post webhook files (or Segment message files) to a running service, with a progress
    bar."""
    import hashlib
    import hmac

    import requests

    url = url or default_url()
    files = list(payload_files(paths))
    answers: dict[str, int] = {}
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Verification-Token"] = token.split(",")[0].strip()
    with requests.Session() as session, click.progressbar(files, label="replaying") as bar:
        for path in bar:
            body = path.read_bytes()
            if secret:
                headers["X-Signature"] = hmac.new(secret.split(",")[0].strip().encode(), body,
                                                  hashlib.sha1).hexdigest()
            try:
                response = session.post(url, data=body, headers=headers, timeout=30)
            except requests.ConnectionError:
                fail(f"cannot reach {url}: is the service running (scripts/run) on this PORT? "
                     "Pass --url to post elsewhere")
            try:
                reply = response.json()
                outcomes = ([result["status"] for result in reply["results"]]
                            if reply.get("status") == "batch"
                            else [reply.get("status") or reply.get("error")])
            except (ValueError, KeyError, TypeError, AttributeError):
                outcomes = [f"http {response.status_code}"]
            for outcome in outcomes:
                answers[outcome] = answers.get(outcome, 0) + 1
    if answers.get("unauthorized"):
        click.echo(refusal_hint(url, answers["unauthorized"]), err=True)
    click.echo(json.dumps(answers, sort_keys=True))
    if set(answers) - {"accepted", "duplicate", "ignored"}:
        sys.exit(1)
