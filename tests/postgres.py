"""A throwaway PostgreSQL server for the tests, started on 127.0.0.1 from Debian's binaries.

``TEST_POSTGRES_URL`` points the tests at an existing server instead. Without either, the
Postgres half of the suite is skipped with the reason, unless ``REQUIRE_POSTGRES=1`` (CI),
where a missing server is a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI machines run tests as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextmanager
def temporary_server() -> Iterator[str | None]:
    """Yield a superuser URL of a fresh server, or None when none can be had."""
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    bin_dir = _binaries()
    if bin_dir is None:
        yield None
        return
    data_dir = tempfile.mkdtemp(prefix="dss-pg-")
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres_user([f"{bin_dir}/initdb", "-D", data_dir, "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True, capture_output=True,
    )
    options = (f"-h 127.0.0.1 -p {port} -k {data_dir} -c fsync=off "
               "-c max_connections=300 -c shared_buffers=128MB")
    subprocess.run(
        _as_postgres_user([f"{bin_dir}/pg_ctl", "-D", data_dir, "-o", options, "-w",
                           "-l", f"{data_dir}/server.log", "start"]),
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([f"{bin_dir}/pg_ctl", "-D", data_dir, "-m", "immediate",
                               "stop"]),
            capture_output=True,
        )
        time.sleep(0.1)
        shutil.rmtree(data_dir, ignore_errors=True)
