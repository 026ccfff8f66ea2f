"""The real service as a child process: ``drift-segment-source serve``, ``worker`` or any
other command, in its own process group, logging to a file, stopped by its PID.

Only the settings a test passes reach it: the test runner's own ``DRIFT_*``, ``SEGMENT_*``,
``DELIVERY_*``... variables are left out. ``checkout`` runs another checkout's package
(``PYTHONPATH``); ``memory_mb`` bounds the memory of each of its processes.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import requests

from .loopback import free_port
from .webhooks import TOKEN

SERVICE_SETTINGS = ("DRIFT_", "SEGMENT_", "DELIVERY_", "DATABASE_", "WEB_", "STORE_",
                    "RETENTION_", "DEDUPE_", "HELD_", "DEAD_LETTER_", "QUARANTINE_", "MAX_BODY",
                    "ADMIN_", "METRICS_TOKEN", "IDENTITY_", "STITCHING_", "PUBLIC_URL",
                    "SECRET_KEY", "TRUSTED_PROXIES", "REQUEST_READ_")
NOT_INHERITED = ("PYTHONPATH", "PORT", "LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR")


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def environment(env: dict[str, str], checkout: str | None = None) -> dict[str, str]:
    """The child's environment: the runner's, less the service's settings, plus ``env``."""
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith(SERVICE_SETTINGS) and key not in NOT_INHERITED}
    full = {**inherited, "DRIFT_VERIFICATION_TOKEN": TOKEN, "LOG_LEVEL": "INFO", **env}
    if checkout is not None:
        full["PYTHONPATH"] = checkout
    return full


def command_line(command: str, args: tuple[str, ...], checkout: str | None) -> list[str]:
    """The argv of a ``drift-segment-source`` command (of another checkout: ``python -c``)."""
    if checkout is None:
        return [str(Path(sys.executable).with_name("drift-segment-source")), command, *args]
    return [sys.executable, "-c", "from drift_segment_source.cli import main; main()",
            command, *args]


class Service:
    """A ``drift-segment-source`` command in its own process group, logs to a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path, *args: str,
                 checkout: str | None = None, memory_mb: int | None = None) -> None:
        self.port = int(env.get("PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.stop_seconds: float | None = None
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        full = environment({"PORT": str(self.port), **env}, checkout)
        # The service makes its own metrics folder; never the test runner's.
        limit = None if memory_mb is None else memory_mb * 2**20

        def bounded() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.process = subprocess.Popen(
            command_line(command, args, checkout), env=full, stdout=self._log,
            stderr=self._log, start_new_session=True, cwd=log_path.parent,
            preexec_fn=bounded if limit is not None else None,
        )

    @property
    def pid(self) -> int:
        """The PID of the command (gunicorn's master for ``serve``)."""
        return self.process.pid

    def wait_ready(self, timeout: float = 60) -> Service:
        """Wait until ``/healthz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service not ready in {timeout}s:\n{self.log()}")

    def log_text(self) -> str:
        """The whole log so far."""
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        """The end of the log (for assertion messages)."""
        return self.log_text()[-5000:]

    def alive(self) -> bool:
        """Whether any process of the group still runs."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and workers): a crash."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM the command (graceful shutdown) and wait for its group; its exit status
        (SIGKILL after ``timeout``). ``stop_seconds`` says how long it took."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers are in the same group: wait for them too (bounded), then make sure.
        wait_for(lambda: not self.alive(), max(0.0, timeout - (time.monotonic() - started)))
        self.stop_seconds = time.monotonic() - started
        self.kill()
        return int(self.process.returncode if self.process.returncode is not None else -9)


def run_command(env: dict[str, str], *args: str, timeout: float = 120,
                checkout: str | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a ``drift-segment-source`` command to its end; its exit code and output."""
    return subprocess.run(command_line(args[0], args[1:], checkout),
                          env=environment(env, checkout), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, start_new_session=True)
