"""``doctor``: check the store, the tokens and the write key for real, and say what needs a
person (the same warnings as the landing page, ``/readyz`` and ``/status``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click

from .. import config, startup
from .base import load_app, main


class Report:
    """Lines of a check-up; counts what failed or needs a person."""

    def __init__(self) -> None:
        self.problems = 0

    def line(self, ok: bool, what: str, detail: str) -> None:
        """``ok`` or ``FAIL`` for one check."""
        self.problems += 0 if ok else 1
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}")

    def skip(self, what: str, detail: str) -> None:
        """A check that cannot run with these settings."""
        click.echo(f"skip  {what}: {detail}")

    def warn(self, sentence: str) -> None:
        """Something that needs a person."""
        self.problems += 1
        click.echo(f"WARN  {sentence}")


@main.command()
def doctor() -> None:
    """Check the store, the Drift token and the Segment write key against the real services,
    and say what needs a person (exit status 1 when anything does)."""
    from ..attention import attention_of

    app = load_app()
    settings = app.config
    report = Report()
    click.echo(f"data  {startup.where_data_lives(settings)}")
    for missing in config.missing(settings):
        report.line(False, "config", missing)
    attention = attention_of(app)
    held = f", {attention.held_count} held" if attention.held_count else ""
    report.line(True, "store", f"reachable, schema current, {attention.backlog} waiting for "
                               f"delivery{held}")
    check_drift_token(settings, report)
    check_write_key(settings, report)
    for warning in attention.warnings():
        report.warn(warning)
    if report.problems:
        sys.exit(1)


def check_drift_token(settings: Mapping[str, Any], report: Report) -> None:
    """``GET /conversations/list`` with the Drift token: does Drift take it?"""
    import requests

    token = settings.get("DRIFT_ACCESS_TOKEN")
    if not token:
        report.skip("Drift API token", "DRIFT_ACCESS_TOKEN unset (lookup events are held)")
        return
    try:
        answer = requests.get(settings["DRIFT_API_URL"].rstrip("/") + "/conversations/list",
                              params={"limit": 1}, timeout=settings["DRIFT_TIMEOUT_SECONDS"],
                              headers={"Authorization": f"Bearer {token}"})
        explained = {401: "token refused", 403: "token lacks conversation_read"}
        report.line(answer.ok, "Drift API token", explained.get(
            answer.status_code, f"GET /conversations/list answered {answer.status_code}"))
    except requests.RequestException as error:
        report.line(False, "Drift API token", f"no answer from Drift: {type(error).__name__}")


def check_write_key(settings: Mapping[str, Any], report: Report) -> None:
    """An empty batch to SEGMENT_HOST with the write key: is the host there, the key taken?"""
    from ..destinations.segment import HttpTransport, SegmentError

    write_key = settings.get("SEGMENT_WRITE_KEY")
    if not write_key:
        report.skip("Segment", "SEGMENT_WRITE_KEY unset (dry-run)")
        return
    try:
        # An empty batch creates no event; Segment accepts it for any well-formed key,
        # so this proves the host and the network path, and catches refused keys.
        HttpTransport(settings["SEGMENT_TIMEOUT_SECONDS"]).post(
            write_key, settings["SEGMENT_HOST"], [])
        report.line(True, "Segment", f"{settings['SEGMENT_HOST']} accepted an empty batch")
    except SegmentError as error:
        report.line(False, "Segment", f"{settings['SEGMENT_HOST']}: {error}")
