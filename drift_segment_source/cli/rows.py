"""Rows that need an operator: ``deadletters`` (delivery gave up) and ``quarantine``
(data that failed its schema)."""

from __future__ import annotations

import json

import click

from .base import load_app, main, when


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
    from ..sources.drift.quarantine import retry_quarantined

    outcome = retry_quarantined(load_app(), list(ids) or None)
    if as_json:
        click.echo(json.dumps(outcome, sort_keys=True))
    else:
        click.echo(f"{outcome['accepted']} accepted, {outcome['duplicate']} already stored, "
                   f"{outcome['still_invalid']} still invalid")


@quarantine.command("purge")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Delete every quarantined payload.")
@click.confirmation_option(prompt="Delete these quarantined payloads for good?")
def quarantine_purge(ids: tuple[int, ...], everything: bool) -> None:
    """Delete quarantined payloads nobody will fix (they stop being a warning)."""
    if not ids and not everything:
        raise click.UsageError("name quarantine ids, or pass --all")
    count = load_app().extensions["store"].purge_quarantined(list(ids) or None)
    click.echo(f"{count} quarantined payload(s) deleted")
