"""Installed Drift orgs (app mode: ``orgs list|show|remove``) and ``backfill``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from .base import load_app, main, when

if TYPE_CHECKING:  # the CLI imports what a command needs when it runs, to start fast
    from ..app_mode.orgs import Org, OrgDirectory


@main.command()
@click.option("--since", "since", type=click.DateTime(), required=True,
              help="Start of the window (UTC), e.g. 2026-11-01.")
@click.option("--until", "until", type=click.DateTime(), default=None,
              help="End of the window (UTC); default now.")
@click.option("--org-id", type=int, required=True, help="The Drift organisation to backfill.")
def backfill(since: datetime, until: datetime | None, org_id: int) -> None:
    """Store the events Drift's conversations and meetings imply (same messageIds as live)."""
    from ..drift_api import DriftApi, DriftApiError
    from ..sources.drift.backfill import (
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


def org_directory() -> OrgDirectory:
    """The directory of installed Drift orgs; only app mode has one."""
    from ..app_mode.org_routing import AppRouting

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
