"""The command group, and loading the app the way every command needs it."""

from __future__ import annotations

import logging
import os
import traceback
from datetime import UTC, datetime
from typing import NoReturn

import click
from flask import Flask

from .. import __version__, config, startup

log = logging.getLogger("drift_segment_source.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drift-segment-source")
def main() -> None:
    """Drift webhooks in, exact Segment calls out."""


def fail(message: str, error: BaseException | None = None) -> NoReturn:
    """Stop with one line naming the setting and the fix (exit status 1); the traceback
    too when LOG_LEVEL=DEBUG."""
    if error is not None and os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG":
        click.echo("".join(traceback.format_exception(error)), err=True)
    raise click.ClickException(message)


def load_app() -> Flask:
    """The app as configured by the environment, with its schema up to date."""
    from ..app import create_app

    try:
        app = create_app()
    except (config.ConfigError, startup.StartupError) as error:
        fail(str(error), error)
    try:
        app.extensions["store"].migrate()
    except Exception as error:
        reason = startup.explain_database(error, app.config)
        if reason is None:
            raise
        app.extensions["store"].close()
        fail(reason, error)
    context = click.get_current_context(silent=True)
    if context is not None:
        # Close pooled connections when the command ends, not at interpreter exit.
        context.call_on_close(app.extensions["store"].close)
    return app


def when(epoch: float | None) -> str:
    """An epoch time for a terminal, in UTC."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
