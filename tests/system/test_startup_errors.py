"""A first start that cannot work says why in one line, naming the setting and the fix, and
exits non-zero at once; the traceback only with LOG_LEVEL=DEBUG."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.loopback import free_port
from ..support.paths import ROOT
from ..support.webhooks import TOKEN

EXECUTABLE = Path(sys.executable).with_name("drift-segment-source")


def run(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A command as a user runs it, in ``cwd``, with these settings over a clean slate."""
    inherited = {key: value for key, value in os.environ.items()
                 if key not in ("PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "INSTANCE_PATH",
                                "SECRET_KEY", "DRIFT_CLIENT_ID", "DRIFT_CLIENT_SECRET",
                                "LOG_LEVEL")}
    settings = {"DRIFT_VERIFICATION_TOKEN": TOKEN, "PORT": str(free_port()),
                "WEB_CONCURRENCY": "1", **env}
    return subprocess.run([str(EXECUTABLE), command], cwd=cwd, env={**inherited, **settings},
                          capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The whole of what a failed start printed, which must be a single line."""
    assert done.returncode != 0
    printed = (done.stdout + done.stderr).strip().splitlines()
    assert len(printed) == 1, done.stdout + done.stderr
    assert printed[0].startswith("Error: ")
    return printed[0]


@pytest.mark.parametrize("url, says", [
    ("not a url at all", "DATABASE_URL is not a database URL: set it to postgres://"),
    ("mysql://relay:hunter22@db.internal/relay",
     "DATABASE_URL names a database this service does not run on "
     "(mysql://relay:***@db.internal/relay): use PostgreSQL or SQLite"),
    ("postgresql+psycopg2://relay:hunter22@127.0.0.1:5432/relay",
     "DATABASE_URL (postgresql+psycopg2://relay:***@127.0.0.1:5432/relay) needs the Python "
     "module 'psycopg2', which is not installed"),
])
def test_a_bad_database_url_names_the_variable_and_the_fix(tmp_path: Path, url: str,
                                                            says: str) -> None:
    for command in ("serve", "migrate", "doctor"):
        line = one_line(run(command, tmp_path, DATABASE_URL=url))
        assert line.startswith(f"Error: {says}"), line
        assert "hunter22" not in line


def test_a_database_server_that_is_not_there_is_named_with_its_address(tmp_path: Path) -> None:
    url = f"postgresql://relay:hunter22@127.0.0.1:{free_port()}/relay"
    line = one_line(run("serve", tmp_path, DATABASE_URL=url))
    assert line.startswith("Error: cannot use the database of DATABASE_URL "
                           f"(postgresql://relay:***@127.0.0.1:{url.rsplit(':', 1)[1]})")
    assert "Connection refused" in line and "hunter22" not in line


def test_an_instance_folder_that_cannot_be_made_names_instance_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    line = one_line(run("serve", tmp_path, INSTANCE_PATH="a-file/instance"))
    folder = tmp_path / "a-file" / "instance"
    assert line == (f"Error: cannot open the SQLite database "
                    f"{folder / 'drift-segment-source.sqlite3'} (Not a directory): create its "
                    f"folder {folder} and make it writable, or set INSTANCE_PATH to a writable "
                    "place")


def test_the_traceback_is_there_at_debug_level(tmp_path: Path) -> None:
    done = run("migrate", tmp_path, DATABASE_URL="mysql://relay@db/relay", LOG_LEVEL="DEBUG")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: DATABASE_URL names")


@pytest.fixture
def port_in_use() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_a_port_in_use_is_said_at_once_without_gunicorns_retries(
        tmp_path: Path, port_in_use: int) -> None:
    done = run("serve", tmp_path, PORT=str(port_in_use))
    assert one_line(done) == (f"Error: PORT {port_in_use} is in use by another process "
                              f"(0.0.0.0:{port_in_use}): stop that process, or set PORT to a "
                              f"free port, e.g. PORT={port_in_use + 1}")
    assert not (tmp_path / "instance").exists()  # said before anything else was done


def test_app_mode_without_secret_key_says_how_to_make_one(tmp_path: Path) -> None:
    line = one_line(run("serve", tmp_path, DRIFT_CLIENT_ID="client",
                        DRIFT_CLIENT_SECRET="client-secret-0123456789"))
    assert line.startswith("Error: SECRET_KEY is unset, and app mode (DRIFT_CLIENT_ID and "
                           "DRIFT_CLIENT_SECRET are set) needs it")
    assert "secrets.token_urlsafe(32)" in line


@pytest.mark.parametrize("command, setting, value", [
    ("doctor", "DELIVERY_BATCH_SIZE", "lots"),
    ("serve", "PORT", "abc"),  # read by the gunicorn settings as well as by the app
    ("serve", "WEB_CONCURRENCY", "two"),
])
def test_a_setting_of_the_wrong_kind_names_itself(tmp_path: Path, command: str, setting: str,
                                                  value: str) -> None:
    line = one_line(run(command, tmp_path, **{setting: value}))
    assert line.startswith(f"Error: {setting}={value!r} is not a whole number: fix or unset it")


@pytest.mark.parametrize("setting, value, allowed", [
    # No worker at all: gunicorn would start none, answer nothing and never exit.
    ("WEB_CONCURRENCY", "0", "a whole number, 1 or more"),
    ("WEB_THREADS", "0", "a whole number, 1 or more"),
    ("PORT", "99999", "a whole number, from 1 to 65535"),
    # Would take webhooks and deliver none, with /readyz green.
    ("DELIVERY_BATCH_SIZE", "0", "a whole number, 1 or more"),
])
def test_a_setting_out_of_its_range_names_itself_and_the_range(
        tmp_path: Path, setting: str, value: str, allowed: str) -> None:
    done = run("serve", tmp_path, **{setting: value})
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert one_line(done).startswith(f"Error: {setting}={value!r} is out of range, it must be "
                                     f"{allowed}: fix it, or unset it for the default ")
    assert not (tmp_path / "instance").exists()  # said before anything else was done


def test_the_default_store_lives_in_the_current_directory_and_is_printed(
        tmp_path: Path) -> None:
    done = run("migrate", tmp_path)
    assert done.returncode == 0, done.stderr
    database = tmp_path / "instance" / "drift-segment-source.sqlite3"
    assert done.stdout.strip() == (f"schema is up to date: SQLite file {database} (the "
                                   "default: DATABASE_URL is unset, INSTANCE_PATH unset, so "
                                   "./instance)")
    assert database.is_file()
    assert f"data: SQLite file {database}" in run("config", tmp_path).stdout


def test_an_installed_copy_keeps_its_data_out_of_where_it_is_installed(tmp_path: Path) -> None:
    # What `pip install .` does: a copy of the package among the installed ones. Its data
    # must not land beside it (in a virtualenv nobody backs up), but where the user runs it.
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "drift_segment_source", site / "drift_segment_source",
                    ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    inherited = {key: value for key, value in os.environ.items()
                 if key not in ("PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "INSTANCE_PATH")}
    done = subprocess.run(
        [sys.executable, "-c", "import drift_segment_source, sys; "
         "print(drift_segment_source.__file__, file=sys.stderr); "
         "from drift_segment_source.cli import main; main()", "migrate"],
        cwd=work, env={**inherited, "PYTHONPATH": str(site), "DRIFT_VERIFICATION_TOKEN": TOKEN},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(str(site / "drift_segment_source" / "__init__.py"))
    assert str(work / "instance" / "drift-segment-source.sqlite3") in done.stdout
    assert not list(site.rglob("*.sqlite3"))
