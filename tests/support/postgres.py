"""A throwaway PostgreSQL server on 127.0.0.1, started from Debian's binaries and stopped by
its own ``pg_ctl``.

The tests run it with ``fsync=off`` (fast); the benchmark asks for ``durable=True``
(fsync and synchronous_commit on, like production). ``TEST_POSTGRES_URL`` points the tests at
an existing server instead. Without either, the PostgreSQL half of the suite is skipped with
the reason, unless ``REQUIRE_POSTGRES=1`` (CI), where a missing server is a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .loopback import free_port


def binaries() -> str | None:
    """The folder of the newest PostgreSQL's binaries installed here, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; CI machines run the tests as root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def engine_url(url: str) -> str:
    """The SQLAlchemy URL (psycopg 3) of a ``postgresql://`` URL."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


class PostgresServer:
    """One server in a fresh data folder; ``stop`` removes it."""

    def __init__(self, bin_dir: str, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.data_dir = tempfile.mkdtemp(prefix="dss-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(as_postgres_user([f"{bin_dir}/initdb", "-D", self.data_dir, "-U",
                                         "postgres", "--auth=trust", "-E", "UTF8",
                                         *([] if durable else ["--no-sync"])]),
                       check=True, capture_output=True, timeout=120)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=300"
        if not durable:
            options += " -c fsync=off -c shared_buffers=128MB"
        subprocess.run(as_postgres_user([f"{bin_dir}/pg_ctl", "-D", self.data_dir, "-o",
                                         options, "-w", "-t", "60", "-l",
                                         f"{self.data_dir}/server.log", "start"]),
                       check=True, capture_output=True, timeout=90)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def version(self) -> str:
        """``postgres (PostgreSQL) 15.x``."""
        return subprocess.run([f"{self.bin_dir}/postgres", "--version"], capture_output=True,
                              text=True, timeout=10).stdout.strip()

    def pids(self) -> list[int]:
        """The postmaster and its backends (for their CPU time)."""
        try:
            postmaster = int(Path(self.data_dir, "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        found: set[int] = set()
        for path in glob.glob(f"/proc/{postmaster}/task/*/children"):
            try:
                found.update(int(child) for child in Path(path).read_text().split())
            except OSError:
                continue
        return [postmaster, *sorted(found)]

    def stop(self) -> None:
        """Stop the server (its own pg_ctl) and delete its data."""
        subprocess.run(as_postgres_user([f"{self.bin_dir}/pg_ctl", "-D", self.data_dir, "-m",
                                         "immediate", "-w", "-t", "30", "stop"]),
                       capture_output=True, timeout=60)
        time.sleep(0.1)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def create_database(server_url: str, name: str | None = None,
                    template: str | None = None) -> str:
    """A new database on the server, empty or a copy of ``template`` (a database name); its
    URL."""
    import sqlalchemy

    name = name or "dss_" + uuid.uuid4().hex[:12]
    admin = sqlalchemy.create_engine(engine_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
            copy = f" TEMPLATE {template}" if template else ""
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}{copy}"))
    finally:
        admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, url: str) -> None:
    """Drop a database made by :func:`create_database` (its connections are ended)."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(engine_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))
    finally:
        admin.dispose()


@contextmanager
def temporary_server(durable: bool = False) -> Iterator[str | None]:
    """Yield a superuser URL of a fresh server, or None when none can be had."""
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    bin_dir = binaries()
    if bin_dir is None:
        yield None
        return
    server = PostgresServer(bin_dir, durable)
    try:
        yield server.url
    finally:
        server.stop()
