"""``scripts/run`` is safe by default: it binds 127.0.0.1, makes a random verification token
when none is set (printed once, kept in ``instance/local.env`` for ``scripts/cli`` and a
second shell), and the service refuses to pair a write key with the public token
``local-dev-token``. ``local.env`` (in ``$INSTANCE_PATH`` when that is set) is replaced only
once every start-up check passed, the port included, and ``scripts/cli`` reads it as a shell
does.

The real scripts run here, bounded in time, in a scratch copy of the project's layout (their
own ``instance/`` folder; the ``.venv`` is this one, so nothing is installed); every request
goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support.loopback import free_port
from .conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow

START_SECONDS = 60
PUBLIC_TOKEN = "local-dev-token"
REAL_LOOKING_KEY = "AAAAwriteKeyOrgA0123456789abcdef"
WEBHOOK = FIXTURES / "new_conversation" / "seed_example.json"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The scripts in a folder of their own, beside this virtualenv."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    for name in ("run", "cli"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return root


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any of the service's settings, plus ``settings``."""
    kept = {name: value for name, value in os.environ.items()
            if name not in {"DRIFT_VERIFICATION_TOKEN", "SEGMENT_WRITE_KEY", "BIND_HOST",
                            "PORT", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR",
                            "DRIFT_CLIENT_ID", "DRIFT_CLIENT_SECRET"}}
    return {**kept, "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "WEB_CONCURRENCY": "1", "DELIVERY_IN_WEB": "false", **settings}


class Run:
    """``scripts/run`` as a child process in its own group, output to a file."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        self.port = int(env["PORT"])
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([str(project / "scripts" / "run")], env=env,
                                        stdout=self._log, stderr=self._log,
                                        start_new_session=True)

    def wait_ready(self, host: str = "127.0.0.1") -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scripts/run exited:\n{self.output()}")
            try:
                if requests.get(f"http://{host}:{self.port}/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"scripts/run not ready in {START_SECONDS} s:\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def start(runs: list[Run], project: Path, env: dict[str, str], log: Path) -> Run:
    run = Run(project, env, log)
    runs.append(run)
    return run


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def post(port: int, token: str, host: str = "127.0.0.1") -> requests.Response:
    return requests.post(f"http://{host}:{port}/webhooks/drift", data=WEBHOOK.read_bytes(),
                         headers={"Content-Type": "application/json",
                                  "X-Verification-Token": token}, timeout=30)


def local_env(project: Path, instance: Path | None = None) -> dict[str, str]:
    """local.env (in the project's instance/ unless ``instance`` is given) as a second shell
    reads it."""
    path = (instance or project / "instance") / "local.env"
    read = subprocess.run(["bash", "-c", 'set -a; . "$1"; set +a; env', "-", str(path)],
                          cwd=project, env={"PATH": os.environ["PATH"]}, capture_output=True,
                          text=True, timeout=30, check=True)
    return dict(line.split("=", 1) for line in read.stdout.splitlines() if "=" in line)


# -- binding ----------------------------------------------------------------------------------


def test_run_binds_loopback_only_and_makes_a_token_of_its_own(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    run = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "run.log")
    run.wait_ready()
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else

    saved = local_env(project)
    token = saved["DRIFT_VERIFICATION_TOKEN"]
    assert len(token) >= 32 and token != PUBLIC_TOKEN
    assert run.output().count(token) == 1  # printed once
    assert oct((project / "instance" / "local.env").stat().st_mode & 0o777) == "0o600"
    assert post(port, PUBLIC_TOKEN).status_code == 401
    assert post(port, token).json()["status"] == "accepted"


def test_the_address_is_a_documented_setting(project: Path, tmp_path: Path,
                                             runs: list[Run]) -> None:
    port = free_port()
    run = start(runs, project, environment(tmp_path, PORT=str(port), BIND_HOST="127.0.0.2"),
                tmp_path / "run.log")
    run.wait_ready(host="127.0.0.2")
    assert listening_addresses(port) == {"0200007F"}


# -- the token --------------------------------------------------------------------------------


def test_a_second_shell_uses_the_same_settings_through_scripts_cli(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    run = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "run.log")
    run.wait_ready()
    second_shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    replayed = subprocess.run(
        [str(project / "scripts" / "cli"), "replay", str(WEBHOOK), "--url",
         f"http://127.0.0.1:{port}/webhooks/drift"],
        env=second_shell, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout.strip().splitlines()[-1]) == {"accepted": 1}
    shown = subprocess.run([str(project / "scripts" / "cli"), "config"], env=second_shell,
                           capture_output=True, text=True, timeout=60)
    assert "nothing missing" in shown.stdout
    assert "store.sqlite3" in shown.stdout  # where the data lives (a path is no secret)


def test_a_start_that_fails_leaves_the_running_services_settings_alone(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    first = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "1.log")
    first.wait_ready()
    before = (project / "instance" / "local.env").read_text()
    failed = subprocess.run(
        [str(project / "scripts" / "run")], capture_output=True, text=True,
        timeout=START_SECONDS, env=environment(tmp_path, PORT=str(free_port()),
                                               DATABASE_URL="notadb://nowhere"))
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "Error: DATABASE_URL names a database this service does not run on")
    assert (project / "instance" / "local.env").read_text() == before  # scripts/cli still works


def test_a_second_run_on_a_busy_port_leaves_the_running_services_settings_alone(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    first = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "1.log")
    first.wait_ready()
    before = (project / "instance" / "local.env").read_text()
    second = subprocess.run(
        [str(project / "scripts" / "run")], capture_output=True, text=True,
        timeout=START_SECONDS, env=environment(
            tmp_path, PORT=str(port), SEGMENT_WRITE_KEY=REAL_LOOKING_KEY,
            DRIFT_VERIFICATION_TOKEN="second-run-token-0123456789"))
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith(f"Error: PORT {port} is in use")
    assert (project / "instance" / "local.env").read_text() == before
    # So a second shell still speaks to the running service with its own settings.
    second_shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    replayed = subprocess.run(
        [str(project / "scripts" / "cli"), "replay", str(WEBHOOK), "--url",
         f"http://127.0.0.1:{port}/webhooks/drift"],
        env=second_shell, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout.strip().splitlines()[-1]) == {"accepted": 1}
    shown = subprocess.run([str(project / "scripts" / "cli"), "config"], env=second_shell,
                           capture_output=True, text=True, timeout=60)
    assert "DRY-RUN" in shown.stdout


def test_with_instance_path_set_local_env_is_written_and_read_in_that_folder(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    elsewhere = tmp_path / "elsewhere"
    port = free_port()
    run = start(runs, project, environment(tmp_path, PORT=str(port), DATABASE_URL="",
                                           INSTANCE_PATH=str(elsewhere)), tmp_path / "run.log")
    run.wait_ready()
    token = local_env(project, elsewhere)["DRIFT_VERIFICATION_TOKEN"]
    assert str(elsewhere / "local.env") in run.output()
    assert oct((elsewhere / "local.env").stat().st_mode & 0o777) == "0o600"
    assert not (project / "instance" / "local.env").exists()  # the default run's is its own
    second_shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                    "INSTANCE_PATH": str(elsewhere)}
    shown = subprocess.run([str(project / "scripts" / "cli"), "config"], env=second_shell,
                           capture_output=True, text=True, timeout=60)
    assert f"data: SQLite file {elsewhere / 'drift-segment-source.sqlite3'}" in shown.stdout
    replayed = subprocess.run(
        [str(project / "scripts" / "cli"), "replay", str(WEBHOOK), "--url",
         f"http://127.0.0.1:{port}/webhooks/drift"],
        env=second_shell, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr  # the token, read from elsewhere
    assert json.loads(replayed.stdout.strip().splitlines()[-1]) == {"accepted": 1}
    assert post(port, token).json()["status"] == "duplicate"


def test_a_value_with_quotes_reaches_scripts_cli_as_scripts_run_started_with_it(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    folder = tmp_path / "o'brien \"x\" $HOME"
    folder.mkdir()
    database = folder / "store.sqlite3"
    run = start(runs, project, environment(tmp_path, PORT=str(free_port()),
                                           DATABASE_URL=f"sqlite:///{database}"),
                tmp_path / "run.log")
    run.wait_ready()
    assert database.exists()
    shown = subprocess.run([str(project / "scripts" / "cli"), "config"],
                           env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
                           capture_output=True, text=True, timeout=60)
    assert f"data: SQLite file {database} (DATABASE_URL)" in shown.stdout


def test_a_later_run_keeps_the_token_and_does_not_print_it_again(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    first = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "1.log")
    first.wait_ready()
    token = local_env(project)["DRIFT_VERIFICATION_TOKEN"]
    first.stop()
    again = start(runs, project, environment(tmp_path, PORT=str(port)), tmp_path / "2.log")
    again.wait_ready()
    assert local_env(project)["DRIFT_VERIFICATION_TOKEN"] == token
    assert token not in again.output()
    assert "instance/local.env" in again.output()
    assert post(port, token).status_code == 200


def test_a_token_given_is_used_and_a_write_key_goes_with_it(
        project: Path, tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    run = start(runs, project, environment(
        tmp_path, PORT=str(port), DRIFT_VERIFICATION_TOKEN="my-own-token-0123456789",
        SEGMENT_WRITE_KEY=REAL_LOOKING_KEY, SEGMENT_HOST="http://127.0.0.1:9"),
        tmp_path / "run.log")
    run.wait_ready()
    assert post(port, "my-own-token-0123456789").json()["status"] == "accepted"
    assert local_env(project)["SEGMENT_WRITE_KEY"] == REAL_LOOKING_KEY
    assert "my-own-token-0123456789" not in run.output()


@pytest.mark.parametrize("tokens", [PUBLIC_TOKEN, f"my-own-token-0123456789,{PUBLIC_TOKEN}"])
def test_run_refuses_a_write_key_with_the_public_token(
        project: Path, tmp_path: Path, tokens: str) -> None:
    port = free_port()
    refused = subprocess.run(
        [str(project / "scripts" / "run")], capture_output=True, text=True,
        timeout=START_SECONDS, env=environment(
            tmp_path, PORT=str(port), DRIFT_VERIFICATION_TOKEN=tokens,
            SEGMENT_WRITE_KEY=REAL_LOOKING_KEY))
    assert refused.returncode != 0
    assert "DRIFT_VERIFICATION_TOKEN" in refused.stderr and PUBLIC_TOKEN in refused.stderr
    assert REAL_LOOKING_KEY not in refused.stderr + refused.stdout
    assert listening_addresses(port) == set()


# -- the rule, in the app itself (no process, no socket) ----------------------------------------




