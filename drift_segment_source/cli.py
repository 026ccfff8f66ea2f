"""``drift-segment-source``: run, inspect and operate the service from a terminal."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import Flask

from . import __version__, config

if TYPE_CHECKING:  # the CLI imports what a command needs when it runs, to start fast
    from .app_mode.orgs import Org, OrgDirectory


def load_app() -> Flask:
    """The app as configured by the environment, with its schema up to date."""
    from .app import create_app

    try:
        app = create_app()
    except config.ConfigError as error:
        raise click.ClickException(str(error)) from None
    app.extensions["store"].migrate()
    context = click.get_current_context(silent=True)
    if context is not None:
        # Close pooled connections when the command ends, not at interpreter exit.
        context.call_on_close(app.extensions["store"].close)
    return app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drift-segment-source")
def main() -> None:
    """Drift webhooks in, exact Segment calls out."""


# -- running --------------------------------------------------------------------------------


@main.command()
def serve() -> None:
    """Run the web service and its delivery loop (gunicorn, binds $PORT)."""
    from gunicorn.app.base import BaseApplication

    # First: it sets PROMETHEUS_MULTIPROC_DIR, which must precede any metric's creation.
    from . import gunicorn_conf

    load_app()  # migrate once, before the workers start

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in vars(gunicorn_conf).items():
                if name in self.cfg.settings and value is not None:
                    self.cfg.set(name, value)

        def load(self) -> Flask:
            from .app import create_app

            return create_app()

    Server().run()


@main.command()
def worker() -> None:
    """Run the delivery loop alone (scale-out: set DELIVERY_IN_WEB=false on web dynos)."""
    from .app import make_delivery

    app = load_app()
    delivery = make_delivery(app)

    def stop(signum: int, frame: Any) -> None:
        click.echo(f"signal {signum}: finishing the current batch", err=True)
        delivery.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delivery.run_forever()


@main.command()
def migrate() -> None:
    """Create or update the database schema."""
    load_app()
    click.echo("schema is up to date")


@main.command("config")
def show_config() -> None:
    """Print every setting (secrets masked) and what is missing."""
    try:
        settings = config.load_settings()
    except config.ConfigError as error:
        raise click.ClickException(str(error)) from None
    width = max(len(setting.name) for setting in config.SETTINGS)
    for setting in config.SETTINGS:
        value = settings[setting.name]
        shown = config.mask(value) if setting.secret else (
            "(unset)" if value in (None, "") else str(value))
        click.echo(f"{setting.name:<{width}}  {shown:<28}  {setting.doc}")
    click.echo()
    mode = "app mode (many orgs)" if config.app_mode(settings) else "self-hosted (one org)"
    click.echo(f"mode: {mode}")
    if config.dry_run(settings):
        click.secho("DRY-RUN: SEGMENT_WRITE_KEY is unset; messages are logged, not sent.",
                    fg="yellow")
    problems = config.missing(settings)
    for problem in problems:
        click.secho(f"missing: {problem}", fg="red")
    if not problems:
        click.echo("nothing missing")


# -- payloads -------------------------------------------------------------------------------


def payload_files(paths: tuple[str, ...]) -> Iterator[Path]:
    """Webhook files under the given files or folders (fixtures' expected files skipped)."""
    for name in paths:
        path = Path(name)
        candidates = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for candidate in candidates:
            if not candidate.name.endswith((".segment.json", ".drift-api.json", ".drift.json")):
                yield candidate


def is_segment_message(document: Any) -> bool:
    """A Segment message (or a batch of them, as Webhooks (Actions) sends it), not a Drift
    webhook: a Segment call ``type`` and no Drift envelope (``orgId``, ``data``)."""
    from .sources.segment.translators import NOT_RELAYED, SEGMENT_TRANSLATORS

    if isinstance(document, list):
        return bool(document) and all(is_segment_message(item) for item in document)
    return (isinstance(document, dict) and "orgId" not in document and "data" not in document
            and (document.get("type") in SEGMENT_TRANSLATORS
                 or document.get("type") in NOT_RELAYED))


def drift_actions(message: dict[str, Any], received_ms: int) -> dict[str, Any]:
    """What a Segment message becomes in Drift: its actions, or why it is ignored."""
    from .sources.segment.translators import NotRelayed
    from .sources.segment.translators import translate as to_actions
    from .sources.segment.webhooks import loop_guard

    ignored = loop_guard(message)
    if ignored is not None:
        return {"ignored": ignored}
    try:
        return {"drift": [action.describe() for action in to_actions(message, received_ms)]}
    except NotRelayed as reason:
        return {"ignored": str(reason)}


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--received-at", type=click.DateTime(), default=None,
              help="Receipt time for events without their own time (default: now, UTC).")
def translate(files: tuple[str, ...], received_at: datetime | None) -> None:
    """Print the Segment messages each webhook file becomes (nothing is sent); for a
    Segment message file, the Drift actions it becomes."""
    from .delivery.stitching import Stitching, facts_of_contact, merged
    from .destinations.segment import MessageBuilder
    from .drift_api import DriftApi
    from .routing import SelfHostedRouting
    from .sources.drift.envelope import Rejected, parse_json, read_envelope
    from .sources.drift.translators import TRANSLATORS
    from .sources.drift.translators import translate as to_calls

    settings = config.load_settings()
    routing = SelfHostedRouting(settings)
    drift_api = DriftApi(settings["DRIFT_API_URL"], settings["DRIFT_TIMEOUT_SECONDS"])
    builder = MessageBuilder()
    stitching = Stitching.from_settings(settings)
    received = (received_at or datetime.now(UTC)).replace(tzinfo=UTC)
    failed = False
    for path in payload_files(files):
        try:
            document = parse_json(path.read_bytes())
            if is_segment_message(document):
                # Segment → Drift (SPEC §10): the Drift actions, not Segment messages.
                received_ms = int(received.timestamp() * 1000)
                shown = ([drift_actions(item, received_ms) for item in document]
                         if isinstance(document, list) else drift_actions(document, received_ms))
                click.echo(json.dumps({"file": str(path), **(
                    {"messages": shown} if isinstance(shown, list) else shown)}, indent=2,
                    ensure_ascii=False))
                continue
            envelope = read_envelope(document)
            translator = TRANSLATORS.get(envelope.event_type)
            if translator is None:
                click.echo(json.dumps({"file": str(path), "ignored": envelope.event_type}))
                continue
            data = translator.validate(envelope.data)
            conversation = None
            needed = translator.conversation_needed(data)
            credentials = routing.drift_credentials(envelope.org_id)
            if needed is not None:
                if credentials is None:
                    raise click.ClickException(
                        f"{path}: needs GET /conversations/{needed}; set DRIFT_ACCESS_TOKEN")
                conversation = drift_api.conversation(envelope.org_id, needed, credentials)
            calls = to_calls(translator, envelope.org_id, data, received, conversation)
            if stitching is not None and calls:
                # As delivery does it: the webhook's own facts, else the Drift API's.
                facts = translator.contact_facts(data)
                if facts.external_id is None and credentials is not None:
                    facts = merged(facts, facts_of_contact(drift_api.contact(
                        envelope.org_id, calls[0].anonymous_id, credentials)))
                calls, link = stitching.stitch(envelope.org_id, calls, facts)
                calls = ([link.call] if link else []) + calls
            messages = [builder.build(call) for call in calls]
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
        click.echo(json.dumps({"file": str(path), "batch": messages}, indent=2,
                              ensure_ascii=False))
    if failed:
        sys.exit(1)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--url", default="http://127.0.0.1:8000/webhooks/drift", show_default=True,
              help="The running service's webhook endpoint.")
@click.option("--token", envvar="DRIFT_VERIFICATION_TOKEN", default=None,
              help="Send this verification token (header) instead of the files' own.")
@click.option("--secret", envvar="SEGMENT_SHARED_SECRET", default=None,
              help="Sign each body with this Segment shared secret (X-Signature), for "
                   "--url .../webhooks/segment.")
def replay(paths: tuple[str, ...], url: str, token: str | None, secret: str | None) -> None:
    """Post webhook files (or Segment message files) to a running service, with a progress
    bar."""
    import hashlib
    import hmac

    import requests

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
            response = session.post(url, data=body, headers=headers, timeout=30)
            try:
                reply = response.json()
                outcomes = ([result["status"] for result in reply["results"]]
                            if reply.get("status") == "batch"
                            else [reply.get("status") or reply.get("error")])
            except (ValueError, KeyError, TypeError, AttributeError):
                outcomes = [f"http {response.status_code}"]
            for outcome in outcomes:
                answers[outcome] = answers.get(outcome, 0) + 1
    click.echo(json.dumps(answers, sort_keys=True))
    if set(answers) - {"accepted", "duplicate", "ignored"}:
        sys.exit(1)


@main.command()
@click.option("--since", "since", type=click.DateTime(), required=True,
              help="Start of the window (UTC), e.g. 2026-11-01.")
@click.option("--until", "until", type=click.DateTime(), default=None,
              help="End of the window (UTC); default now.")
@click.option("--org-id", type=int, required=True, help="The Drift organisation to backfill.")
def backfill(since: datetime, until: datetime | None, org_id: int) -> None:
    """Store the events Drift's conversations and meetings imply (same messageIds as live)."""
    from .drift_api import DriftApi, DriftApiError
    from .sources.drift.backfill import (
        BeyondHorizon,
        check_window,
        implied_webhooks,
        store_webhooks,
    )

    app = load_app()
    settings = app.config
    credentials = app.extensions["routing"].drift_credentials(org_id)
    if credentials is None:
        raise click.ClickException("backfill reads the Drift API: set DRIFT_ACCESS_TOKEN")
    since_ms = int(since.replace(tzinfo=UTC).timestamp() * 1000)
    until_ms = int((until or datetime.now(UTC)).replace(tzinfo=UTC).timestamp() * 1000)
    try:
        check_window(app.extensions["store"], since_ms)
    except BeyondHorizon as error:
        raise click.ClickException(str(error)) from None
    drift_api = DriftApi(settings["DRIFT_API_URL"], settings["DRIFT_TIMEOUT_SECONDS"])
    webhooks = implied_webhooks(drift_api, credentials, org_id, since_ms, until_ms)
    try:
        with click.progressbar(length=0, label="backfilling", show_pos=True) as bar:
            outcomes = store_webhooks(app.extensions["store"], app.extensions["routing"],
                                      webhooks, on_each=lambda outcome: bar.update(1))
    except DriftApiError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(dict(outcomes), sort_keys=True))


@main.command()
def doctor() -> None:
    """Check the store, the Drift token and the Segment write key against the real services."""
    import requests

    from .destinations.segment import HttpTransport, SegmentError

    app = load_app()
    settings = app.config
    problems = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")

    for missing in config.missing(settings):
        report(False, "config", missing)
    count, oldest = app.extensions["store"].backlog()
    report(True, "store", f"reachable, schema current, {count} waiting for delivery")
    token = settings.get("DRIFT_ACCESS_TOKEN")
    if token:
        try:
            answer = requests.get(settings["DRIFT_API_URL"].rstrip("/") + "/conversations/list",
                                  params={"limit": 1}, timeout=settings["DRIFT_TIMEOUT_SECONDS"],
                                  headers={"Authorization": f"Bearer {token}"})
            explained = {401: "token refused", 403: "token lacks conversation_read"}
            report(answer.ok, "Drift API token", explained.get(
                answer.status_code, f"GET /conversations/list answered {answer.status_code}"))
        except requests.RequestException as error:
            report(False, "Drift API token", f"no answer from Drift: {type(error).__name__}")
    else:
        click.echo("skip  Drift API token: DRIFT_ACCESS_TOKEN unset (lookup events are held)")
    write_key = settings.get("SEGMENT_WRITE_KEY")
    if write_key:
        try:
            # An empty batch creates no event; Segment accepts it for any well-formed key,
            # so this proves the host and the network path, and catches refused keys.
            HttpTransport(settings["SEGMENT_TIMEOUT_SECONDS"]).post(
                write_key, settings["SEGMENT_HOST"], [])
            report(True, "Segment", f"{settings['SEGMENT_HOST']} accepted an empty batch")
        except SegmentError as error:
            report(False, "Segment", str(error))
    else:
        click.echo("skip  Segment: SEGMENT_WRITE_KEY unset (dry-run)")
    if problems:
        sys.exit(1)


# -- dead letters and quarantine ------------------------------------------------------------


def when(epoch: float | None) -> str:
    """An epoch time for a terminal, in UTC."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@main.group()
def deadletters() -> None:
    """Webhooks delivery gave up on, with the reason."""


@deadletters.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def deadletters_list(limit: int, as_json: bool) -> None:
    """Show the newest dead letters."""
    rows = load_app().extensions["store"].dead_letters(limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no dead letters")
        return
    click.echo(f"{'id':>8}  {'org':>10}  {'type':<34}  {'tries':>5}  "
               f"{'received (UTC)':<19}  reason")
    for row in rows:
        click.echo(f"{row['id']:>8}  {row['org_id']:>10}  {row['event_type']:<34}  "
                   f"{row['attempts']:>5}  {when(row['received_at']):<19}  {row['last_error']}")


@deadletters.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Retry every dead letter.")
def deadletters_retry(ids: tuple[int, ...], everything: bool) -> None:
    """Send dead letters back to delivery (translated again from the stored webhook)."""
    if not ids and not everything:
        raise click.UsageError("name dead-letter ids, or pass --all")
    count = load_app().extensions["store"].retry_dead(list(ids) or None)
    click.echo(f"{count} dead letter(s) queued for delivery")


@deadletters.command("purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Delete every dead letter.")
@click.confirmation_option(prompt="Delete these dead letters for good?")
def deadletters_purge(ids: tuple[int, ...], everything: bool) -> None:
    """Delete dead letters for good."""
    if not ids and not everything:
        raise click.UsageError("name dead-letter ids, or pass --all")
    count = load_app().extensions["store"].purge_dead(list(ids) or None)
    click.echo(f"{count} dead letter(s) deleted")


@main.group()
def quarantine() -> None:
    """Payloads refused with 422 (data failed its schema), kept for a translator fix."""


@quarantine.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def quarantine_list(limit: int, as_json: bool) -> None:
    """Show quarantined payloads and their field errors."""
    rows = load_app().extensions["store"].quarantined(limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps({**row, "errors": json.loads(row["errors"])}))
        return
    if not rows:
        click.echo("quarantine is empty")
        return
    click.echo(f"{'id':>8}  {'org':>10}  {'type':<34}  {'received (UTC)':<19}  errors")
    for row in rows:
        click.echo(f"{row['id']:>8}  {row['org_id'] or '-':>10}  {row['event_type']:<34}  "
                   f"{when(row['received_at']):<19}  {row['errors']}")


@quarantine.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def quarantine_retry(ids: tuple[int, ...], as_json: bool) -> None:
    """Validate quarantined payloads again; those that pass now are queued for delivery."""
    from .store.quarantine import retry_quarantined

    outcome = retry_quarantined(load_app(), list(ids) or None)
    if as_json:
        click.echo(json.dumps(outcome, sort_keys=True))
    else:
        click.echo(f"{outcome['accepted']} accepted, {outcome['duplicate']} already stored, "
                   f"{outcome['still_invalid']} still invalid")


# -- installed orgs (app mode) --------------------------------------------------------------


def org_directory() -> OrgDirectory:
    """The directory of installed Drift orgs; only app mode has one."""
    from .app_mode.org_routing import AppRouting

    routing = load_app().extensions["routing"]
    if not isinstance(routing, AppRouting):
        raise click.ClickException("not in app mode: set DRIFT_CLIENT_ID, DRIFT_CLIENT_SECRET "
                                   "and SECRET_KEY")
    directory: OrgDirectory = routing.directory
    return directory


def org_facts(org: Org) -> dict[str, Any]:
    """What an operator may see of an org: whether each secret is set, never its value."""
    return {
        "org_id": org.org_id,
        "status": org.status,
        "write_key_set": org.has_write_key,
        "segment_secret_set": org.has_segment_secret,
        "segment_host": org.segment_host,
        "access_token_set": org.has_access_token,
        "refresh_token_set": org.has_refresh_token,
        "token_expires_at": org.token_expires_at,
        "installed_at": org.installed_at,
        "updated_at": org.updated_at,
    }


@main.group()
def orgs() -> None:
    """Drift organisations that installed the app (app mode)."""


@orgs.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def orgs_list(as_json: bool) -> None:
    """Show every installed org and whether it is ready to deliver."""
    installed = org_directory().all()
    if as_json:
        for org in installed:
            click.echo(json.dumps(org_facts(org)))
        return
    if not installed:
        click.echo("no org has installed the app")
        return
    click.echo(f"{'org':>12}  {'status':<16}  {'write key':<9}  {'token expires (UTC)':<19}  "
               "segment host")
    for org in installed:
        click.echo(f"{org.org_id:>12}  {org.status:<16}  "
                   f"{'set' if org.has_write_key else 'missing':<9}  "
                   f"{when(org.token_expires_at):<19}  {org.segment_host or '-'}")


@orgs.command("show")
@click.argument("org_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the org as JSON.")
def orgs_show(org_id: int, as_json: bool) -> None:
    """Show one org, and how many of its webhooks are held."""
    directory = org_directory()
    org = directory.get(org_id)
    if org is None:
        raise click.ClickException(f"org {org_id} has not installed the app")
    facts = {**org_facts(org), "held_webhooks": directory.held(org_id)}
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for name, value in facts.items():
        if name.endswith("_at"):
            value = when(value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        click.echo(f"{name:<18}  {value if value not in (None, {}) else '-'}")


@orgs.command("remove")
@click.argument("org_id", type=int)
@click.confirmation_option(prompt="Forget this org and its tokens and write key?")
def orgs_remove(org_id: int) -> None:
    """Forget an org; its webhooks are ignored until it installs the app again."""
    directory = org_directory()
    held = sum(directory.held(org_id).values())
    if not directory.remove(org_id):
        raise click.ClickException(f"org {org_id} has not installed the app")
    click.echo(f"org {org_id} removed; {held} held webhook(s) stay held until it installs again")
