"""Starting the service: where its data lives, what it says once at start, and start-up
errors turned into one line that names the setting and the fix.

A first run fails on a typo in ``DATABASE_URL``, a folder it cannot write, a port another
process holds or a missing ``SECRET_KEY``; each used to end in a long traceback that never
named the variable. The traceback is still logged, at DEBUG (``LOG_LEVEL=DEBUG``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from . import config, logs

log = logging.getLogger("drift_segment_source.startup")

SQLITE_FILE_NAME = "drift-segment-source.sqlite3"
SUPPORTED_DATABASES = ("sqlite", "postgresql")
DATABASE_EXAMPLES = ("postgres://user:password@host:5432/name or "
                     "sqlite:////absolute/path/to/file.sqlite3")
# A database's own words about why it refused are kept to their first line, this long.
REASON_LENGTH = 160


class StartupError(Exception):
    """The service cannot start; the message is one line naming the setting and the fix."""


def database_url(settings: Mapping[str, Any]) -> str:
    """The database the settings point at: DATABASE_URL, else the SQLite file in the
    instance folder (nothing is created here)."""
    configured = settings.get("DATABASE_URL")
    if configured:
        return str(configured)
    return "sqlite:///" + os.path.join(config.instance_path(settings), SQLITE_FILE_NAME)


def sqlite_file(url: str) -> str | None:
    """The absolute path of a SQLite database URL's file (None for other databases)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(config.normalise_database_url(url))
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database \
            or parsed.database == ":memory:":
        return None
    return os.path.abspath(parsed.database)


def masked(url: str) -> str:
    """A database URL fit to print: its password replaced by ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def where_data_lives(settings: Mapping[str, Any]) -> str:
    """One line saying where the store is: the SQLite file, or the masked database URL."""
    url = database_url(settings)
    path = sqlite_file(url)
    origin = ("DATABASE_URL" if settings.get("DATABASE_URL")
              else "the default: DATABASE_URL is unset, INSTANCE_PATH "
                   + ("set" if settings.get("INSTANCE_PATH") else "unset, so ./instance"))
    if path is not None:
        return f"SQLite file {path} ({origin})"
    return f"{masked(url)} ({origin})"


def announce(settings: Mapping[str, Any]) -> None:
    """What the operator should know once, when the service starts: where the data lives,
    dry-run, and what is missing. (Not on every command: those say it when asked.)"""
    logs.configure(settings["LOG_LEVEL"])
    logs.REDACTOR.add_configured(config.secret_values(settings))
    log.info("store: %s", where_data_lives(settings))
    if config.dry_run(settings):
        log.warning("DRY-RUN: SEGMENT_WRITE_KEY is not set; messages are logged, not sent")
    for problem in config.missing(settings):
        log.warning("configuration incomplete: %s", problem)


# -- start-up errors ----------------------------------------------------------------------------


def first_line(error: BaseException) -> str:
    """The first line of what a driver said, short, with configured secrets scrubbed."""
    original = getattr(error, "orig", None) or error
    text = (str(original).strip().splitlines() or [type(original).__name__])[0]
    if len(text) > REASON_LENGTH:
        text = text[:REASON_LENGTH] + "…"
    return logs.REDACTOR.scrub(text)


def database_setting(settings: Mapping[str, Any]) -> str:
    """The setting that chose the database: DATABASE_URL, or INSTANCE_PATH by default."""
    return "DATABASE_URL" if settings.get("DATABASE_URL") else "INSTANCE_PATH"


def explain_database(error: BaseException, settings: Mapping[str, Any]) -> str | None:
    """One line naming the setting behind an error met while opening or migrating the store,
    and the fix; None when it is not a problem of the settings (the traceback then stands)."""
    from sqlalchemy import exc

    url = database_url(settings)
    shown = masked(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    backend = "postgresql" if backend == "postgres" else backend
    if isinstance(error, exc.NoSuchModuleError) or (
            isinstance(error, ImportError) and backend not in SUPPORTED_DATABASES):
        return (f"DATABASE_URL names a database this service does not run on ({shown}): "
                f"use PostgreSQL or SQLite, e.g. {DATABASE_EXAMPLES}")
    if isinstance(error, ImportError):
        module = error.name or first_line(error)
        return (f"DATABASE_URL ({shown}) needs the Python module {module!r}, which is not "
                "installed: write the URL as postgres://… or postgresql://… (the psycopg 3 "
                f"driver comes with the service), or pip install {module}")
    path = sqlite_file(url)
    if isinstance(error, exc.DBAPIError | OSError) and path is not None:
        reason = (error.strerror or type(error).__name__ if isinstance(error, OSError)
                  else first_line(error))
        return (f"cannot open the SQLite database {path} ({reason}): create its folder "
                f"{os.path.dirname(path)} and make it writable, or set "
                f"{database_setting(settings)} to a writable place")
    if isinstance(error, exc.DBAPIError):
        return (f"cannot use the database of DATABASE_URL ({shown}): {first_line(error)}; "
                "check its host, port, user, password and database name, and that the "
                "server is running")
    if isinstance(error, exc.ArgumentError | ValueError):
        return (f"DATABASE_URL is not a database URL: set it to {DATABASE_EXAMPLES}, or unset "
                "it for a SQLite file in the instance folder")
    if isinstance(error, OSError):
        where = error.filename or config.instance_path(settings)
        return (f"cannot write {where} ({error.strerror or type(error).__name__}): set "
                f"{database_setting(settings)} to a folder this user can write")
    return None


# -- the port ------------------------------------------------------------------------------------


def check_ports(addresses: Iterable[str]) -> None:
    """StartupError unless every ``host:port`` can be bound now, so a port in use is said at
    once (gunicorn would retry it for five seconds, then print its own traceback)."""
    for address in addresses:
        host, _, port_text = address.rpartition(":")
        port = int(port_text)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn binds: a port in TIME_WAIT after a restart is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"PORT {port} is in use by another process ({address}): stop that "
                        f"process, or set PORT to a free port, e.g. PORT={port + 1}") from None
                if error.errno == errno.EACCES:
                    raise StartupError(
                        f"PORT {port} needs privileges this user lacks ({address}): set PORT "
                        "to a port above 1023, e.g. PORT=8000") from None
                raise StartupError(f"cannot listen on {address} ({error.strerror}): check "
                                   "PORT") from None
