"""Running the service: ``serve``, ``worker``, ``migrate``, and ``config``."""

from __future__ import annotations

import signal
from typing import Any

import click
from flask import Flask

from .. import config, startup
from .base import fail, load_app, main


@main.command()
def serve() -> None:
    """Run the web service and its delivery loop (gunicorn, binds $PORT)."""
    try:
        # Checked before gunicorn (which reads WEB_CONCURRENCY when imported) and
        # gunicorn_conf read them, so a bad value is one line, not a traceback.
        config.load_settings()
    except config.ConfigError as error:
        fail(str(error), error)
    from gunicorn.app.base import BaseApplication

    # Then: it sets PROMETHEUS_MULTIPROC_DIR, which must precede any metric's creation.
    from .. import gunicorn_conf

    try:
        # Said now, in one line: gunicorn would retry a port in use for five seconds.
        startup.check_ports(gunicorn_conf.bind)
    except startup.StartupError as error:
        fail(str(error), error)
    load_app()  # migrate once, before the workers start

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for name, value in vars(gunicorn_conf).items():
                if name in self.cfg.settings and value is not None:
                    self.cfg.set(name, value)

        def load(self) -> Flask:
            from ..app import create_app

            return create_app()

    Server().run()


@main.command()
def worker() -> None:
    """Run the delivery loop alone (scale-out: set DELIVERY_IN_WEB=false on web dynos)."""
    from ..app import make_delivery

    app = load_app()
    startup.announce(app.config)
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
    app = load_app()
    click.echo(f"schema is up to date: {startup.where_data_lives(app.config)}")


@main.command("config")
def show_config() -> None:
    """Print every setting (secrets masked), where the data lives, and what is missing."""
    try:
        settings = config.load_settings()
    except config.ConfigError as error:
        fail(str(error), error)
    width = max(len(setting.name) for setting in config.SETTINGS)
    for setting in config.SETTINGS:
        value = settings[setting.name]
        shown = config.mask(value) if setting.secret else (
            "(unset)" if value in (None, "") else str(value))
        click.echo(f"{setting.name:<{width}}  {shown:<28}  {setting.doc}")
    click.echo()
    mode = "app mode (many orgs)" if config.app_mode(settings) else "self-hosted (one org)"
    click.echo(f"mode: {mode}")
    click.echo(f"data: {startup.where_data_lives(settings)}")
    if config.dry_run(settings):
        click.secho("DRY-RUN: SEGMENT_WRITE_KEY is unset; messages are logged, not sent.",
                    fg="yellow")
    problems = config.missing(settings)
    for problem in problems:
        click.secho(f"missing: {problem}", fg="red")
    if not problems:
        click.echo("nothing missing")
