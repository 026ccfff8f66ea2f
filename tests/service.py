"""Run the real service (``drift-segment-source serve`` or ``worker``) as a child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import requests

from .conftest import TOKEN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """A ``drift-segment-source`` subcommand in its own process group, logs to a file."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        # The service makes its own metrics folder; never share the test runner's.
        inherited = {key: value for key, value in os.environ.items()
                     if key != "PROMETHEUS_MULTIPROC_DIR"}
        full_env = {**inherited, "PORT": str(self.port), "DRIFT_VERIFICATION_TOKEN": TOKEN,
                    **env}
        executable = Path(sys.executable).with_name("drift-segment-source")
        self.process = subprocess.Popen(
            [str(executable), command], env=full_env, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until /healthz answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and workers): a crash."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM the process (graceful shutdown); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return int(self.process.returncode)
