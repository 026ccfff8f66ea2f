"""The benchmark behind ``bench/run``: the service measured against the bare stack it runs on.

Everything runs on 127.0.0.1 and every step has a time limit. In order:

1. ingest: a baseline (Flask answering 200 without work, on the service's gunicorn settings)
   and the real service (``drift-segment-source serve`` on SQLite, and on PostgreSQL when its
   binaries are installed) are each driven by wrk with realistic Drift webhooks of all ten
   types, every request a distinct event; runs alternate baseline and service, repeated;
2. delivery: N webhooks are stored, then ``drift-segment-source worker`` drains them into a
   loopback fake Segment; compared with a minimal loop posting the same number of pre-built
   messages with the Segment library's ``request.post``;
3. backlog: the worker drains a large backlog while its RSS is sampled; the fake must receive
   exactly the expected set of messageIds.

The Markdown report goes to ``bench/results/<date>-<host>.md`` and ``bench/results/latest.md``
and is printed. Settings (environment): see ``Settings.from_environment``.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))  # the tests' support folder: the fake Segment, PostgreSQL

import workload  # noqa: E402

from tests.support.postgres import PostgresServer, create_database  # noqa: E402
from tests.support.postgres import binaries as postgres_binaries  # noqa: E402

TOKEN = "fixture-verification-token"  # the fixtures' own token
WRITE_KEY = "bench-write-key-0123456789"
BIN = Path(sys.executable).parent

# The targets the service is measured against (reported, never asserted).
TARGET_INGEST_RATIO = 0.6
TARGET_P99_MS = 20.0
TARGET_EVENTS_PER_S = 10_000
TARGET_RSS_MIB = 200
# p99 at 200 webhooks/s within this factor of the bare app's p99 at 200/s.
TARGET_P99_RATIO = 1.5


def log(message: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchFailure(RuntimeError):
    """Something the benchmark checks went wrong (refused webhooks, lost messages...)."""


# -- settings -------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass
class Settings:
    """What to run; every value comes from a BENCH_* environment variable."""

    quick: bool
    seconds: int  # BENCH_SECONDS: length of one measured wrk run
    repeats: int  # BENCH_REPEATS: runs per target, alternating
    warmup: int  # BENCH_WARMUP: unmeasured seconds of load before each run
    connections: int  # BENCH_CONNECTIONS
    wrk_threads: int  # BENCH_WRK_THREADS
    delivery_n: int  # BENCH_DELIVERY_N: webhooks stored for the delivery measurement
    backlog: int  # BENCH_BACKLOG: webhooks stored for the RSS / no-loss drain
    postgres: str  # BENCH_POSTGRES: auto (when installed), 1 (required) or 0
    phases: set[str]  # BENCH_PHASES: ingest,delivery,backlog
    variants: set[str]  # BENCH_INGEST_VARIANTS: no-delivery (service with DELIVERY_IN_WEB=false)
    rates: list[int]  # BENCH_RATES: offered webhooks/s of the paced (open-loop) runs
    rate_seconds: int  # BENCH_RATE_SECONDS: length of one paced run
    rate_connections: int  # BENCH_RATE_CONNECTIONS: wrk connections of a paced run
    drain_timeout: int  # BENCH_DRAIN_TIMEOUT: seconds a drain may take
    total_timeout: int  # BENCH_TIMEOUT: seconds the whole benchmark may take
    results: Path  # BENCH_RESULTS_DIR

    @classmethod
    def from_environment(cls) -> Settings:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0", "false")
        return cls(
            quick=quick,
            seconds=_env_int("BENCH_SECONDS", 5 if quick else 15),
            repeats=_env_int("BENCH_REPEATS", 1 if quick else 3),
            warmup=_env_int("BENCH_WARMUP", 1 if quick else 3),
            connections=_env_int("BENCH_CONNECTIONS", 32),
            wrk_threads=_env_int("BENCH_WRK_THREADS", 2),
            delivery_n=_env_int("BENCH_DELIVERY_N", 10_000 if quick else 100_000),
            backlog=_env_int("BENCH_BACKLOG", 10_000 if quick else 1_000_000),
            postgres=os.environ.get("BENCH_POSTGRES", "auto").strip() or "auto",
            phases=set((os.environ.get("BENCH_PHASES")
                        or "ingest,latency,delivery,backlog").split(",")),
            variants=set(filter(None, os.environ.get("BENCH_INGEST_VARIANTS", "").split(","))),
            rates=[int(rate) for rate in (os.environ.get("BENCH_RATES") or "50,200,800")
                   .split(",") if rate.strip()],
            rate_seconds=_env_int("BENCH_RATE_SECONDS", 5 if quick else 20),
            rate_connections=_env_int("BENCH_RATE_CONNECTIONS", 32),
            drain_timeout=_env_int("BENCH_DRAIN_TIMEOUT", 1800),
            total_timeout=_env_int("BENCH_TIMEOUT", 900 if quick else 5400),
            results=Path(os.environ.get("BENCH_RESULTS_DIR") or HERE / "results"),
        )


# -- processes ------------------------------------------------------------------------------

STARTED: list[Process] = []


class Process:
    """A child started by the benchmark in its own session, stopped by its own pid/group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid
        STARTED.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 40) -> None:
        """SIGTERM (gunicorn and the worker finish their batch), SIGKILL after ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:g}s: SIGKILL")
        # The group is this process and its own children (gunicorn workers): nothing else.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(10)
        self._log.close()
        if self in STARTED:
            STARTED.remove(self)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_everything() -> None:
    """Stop every child still running (normal end, failure, timeout or Ctrl-C)."""
    for process in reversed(list(STARTED)):
        try:
            process.stop(timeout=30)
        except Exception as error:  # keep stopping the others
            log(f"could not stop {process.name}: {error}")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers)."""
    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found.extend(int(child) for child in Path(path).read_text().split())
        except OSError:
            continue
    return sorted(set(found))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (from /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall time) from /proc/stat, for deltas."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), \
        time.monotonic()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (loopback only)
        data: bytes = answer.read()
        return data


def wait_until_ready(process: Process, url: str, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200 (the app is loaded in a worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchFailure(f"{process.name} exited during start-up:\n{process.tail()}")
        try:
            http_get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise BenchFailure(f"{process.name} not ready after {timeout:g}s:\n{process.tail()}")


def service_env(base: dict[str, str], **values: str) -> dict[str, str]:
    """The environment of a service process: the caller's, minus settings that would change
    what is measured (app mode, fault injection, a Drift token), plus ``values``."""
    env = {key: value for key, value in base.items() if not key.startswith(
        ("DRIFT_", "SEGMENT_", "DATABASE_URL", "STORE_FAULT", "DELIVERY_", "WEB_",
         "PROMETHEUS_MULTIPROC_DIR", "PORT", "LOG_LEVEL", "SECRET_KEY", "ADMIN_TOKEN"))}
    env.update(values)
    return env


def console_script(name: str) -> str:
    """A console script of the benchmark's Python environment."""
    found = BIN / name
    if found.exists():
        return str(found)
    other = shutil.which(name)
    if other is None:
        raise BenchFailure(f"{name} is not installed (pip install -e . in this environment)")
    return other


# -- the fake Segment -----------------------------------------------------------------------


class FakeSegmentProcess:
    """The tests' counting fake Segment (``python -m tests.support.fake_segment``) in its own
    process, so it never shares a GIL with the measured."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ids_file = folder / f"{name}.ids"
        port_file = folder / f"{name}.port"
        self.process = Process(f"fake-segment-{name}",
                               [sys.executable, "-m", "tests.support.fake_segment",
                                str(port_file), str(self.ids_file)],
                               {**os.environ, "PYTHONPATH": str(ROOT)}, folder / f"{name}.log")
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if time.monotonic() > deadline or not self.process.alive():
                raise BenchFailure(f"fake Segment did not start:\n{self.process.tail()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(http_get(self.url + "/stats"))
        return result

    def received_ids(self) -> Counter[str]:
        self.stats()  # flushes the file
        with open(self.ids_file, encoding="ascii") as ids:
            return Counter(line.rstrip("\n") for line in ids if line.strip())

    def stop(self) -> None:
        self.process.stop(timeout=10)


# -- PostgreSQL -----------------------------------------------------------------------------


class Postgres(PostgresServer):
    """A throwaway server on 127.0.0.1 (tests/support/postgres.py), durable like production
    (fsync and synchronous_commit on, unlike the test suite's fsync=off)."""

    def __init__(self, bin_dir: str) -> None:
        super().__init__(bin_dir, durable=True)

    def new_database(self, name: str) -> str:
        return create_database(self.url, name)


# -- ingest ---------------------------------------------------------------------------------


@dataclass
class IngestRun:
    target: str
    repeat: int
    accepted_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    accepted: int
    refused: int
    socket_errors: int
    first_refusal: str
    stored: int | None = None
    delivered_during: int | None = None
    server_cores: float = 0.0  # CPU used by gunicorn (master + workers), in cores
    wrk_cores: float = 0.0
    machine_cores: float = 0.0  # the whole machine: also the database, fake, anything else
    database_cores: float | None = None  # PostgreSQL's processes (SQLite runs in the server)


@dataclass
class Target:
    """Something wrk drives: the baseline, or the service on one database."""

    name: str
    kind: str  # baseline | service
    database: str | None = None  # sqlite | postgres
    env: dict[str, str] = field(default_factory=dict)  # settings of a diagnostic variant


def run_wrk(url: str, settings: Settings, seconds: int, templates_file: Path, run_id: int,
            log_path: Path, rate: float | None = None) -> dict[str, Any]:
    """One wrk run; its BENCH_RESULT line as a dict. With ``rate`` (webhooks/s), a paced run:
    requests leave on a fixed schedule (webhooks.lua's delay()), and the result also holds
    the whole latency histogram (``histogram``: [microseconds, count] pairs)."""
    connections = settings.rate_connections if rate else settings.connections
    argv = ["wrk", f"-t{settings.wrk_threads}", f"-c{connections}", f"-d{seconds}s",
            "--timeout", "10s", "--latency", "-s", str(HERE / "webhooks.lua"), url, "--",
            str(templates_file), str(run_id)]
    env = dict(os.environ)
    env.pop("BENCH_WRK_RATE", None)
    if rate:
        env["BENCH_WRK_RATE"] = str(rate / settings.wrk_threads)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                              env=env)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"wrk did not finish within {seconds + 60}s") from None
    log_path.write_text(done.stdout + done.stderr)
    result: dict[str, Any] | None = None
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
        elif line.startswith("BENCH_HISTOGRAM ") and result is not None:
            result["histogram"] = json.loads(line[len("BENCH_HISTOGRAM "):])
    if result is None:
        raise BenchFailure(f"wrk gave no result (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return result


def percentile(histogram: list[tuple[int, int]], share: float) -> float:
    """The value (µs) at or below which ``share`` (0-100) of the samples fall."""
    ordered = sorted(histogram)
    total = sum(count for _, count in ordered)
    if not total:
        return 0.0
    wanted = share / 100 * total
    seen = 0
    for value, count in ordered:
        seen += count
        if seen >= wanted:
            return float(value)
    return float(ordered[-1][0])


def pooled(histograms: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Several runs' histograms as one (the repeats of a paced run, pooled)."""
    merged: Counter[int] = Counter()
    for histogram in histograms:
        for value, count in histogram:
            merged[int(value)] += int(count)
    return sorted(merged.items())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(usage.ru_utime + usage.ru_stime)


def count_rows(database_url: str, settle: float = 10) -> int:
    """Rows in ``webhooks`` once requests still in flight have landed (two equal counts)."""
    import sqlalchemy

    from drift_segment_source.config import normalise_database_url

    engine = sqlalchemy.create_engine(normalise_database_url(database_url))
    deadline = time.monotonic() + settle
    previous = -1
    try:
        while True:
            with engine.connect() as connection:
                count = int(connection.execute(
                    sqlalchemy.text("SELECT count(*) FROM webhooks")).scalar_one())
            if count == previous or time.monotonic() > deadline:
                return count
            previous = count
            time.sleep(0.3)
    finally:
        engine.dispose()


class Ingest:
    """Alternating wrk runs against the baseline and the service."""

    def __init__(self, settings: Settings, work: Path, templates_file: Path,
                 postgres: Postgres | None) -> None:
        self.settings = settings
        self.work = work
        self.templates_file = templates_file
        self.postgres = postgres
        self.runs: list[IngestRun] = []
        self.run_counter = 10  # wrk's RUN argument: distinct per wrk invocation

    def targets(self) -> list[Target]:
        databases = [("SQLite", "sqlite")]
        if self.postgres is not None:
            databases.append(("PostgreSQL", "postgres"))
        found = [Target("baseline (Flask, return 200)", "baseline")]
        found += [Target(f"service, {name}", "service", database) for name, database in databases]
        for variant in sorted(self.settings.variants):
            # Diagnostics: the service with other settings, e.g. no-delivery (what the in-web
            # delivery thread costs the web workers) or NAME=VALUE+NAME=VALUE.
            values = ({"DELIVERY_IN_WEB": "false"} if variant == "no-delivery" else
                      dict(item.split("=", 1) for item in variant.split("+") if "=" in item))
            label = ", ".join(f"{key}={value}" for key, value in values.items())
            found += [Target(f"service, {name}, {label}", "service", database, values)
                      for name, database in databases]
        return found

    def run_all(self, fake: FakeSegmentProcess) -> None:
        for repeat in range(1, self.settings.repeats + 1):
            for target in self.targets():
                self.runs.append(self.run_one(target, repeat, fake))

    def next_run_id(self) -> int:
        self.run_counter += 1
        if self.run_counter > 9999:  # webhooks.lua keeps ids under 2**53 up to here
            raise BenchFailure("too many wrk runs for webhooks.lua's ids")
        return self.run_counter

    def start(self, target: Target, folder: Path, fake: FakeSegmentProcess
              ) -> tuple[Process, str | None]:
        port = free_port()
        prometheus = folder / "prometheus"
        prometheus.mkdir()
        if target.kind == "baseline":
            env = service_env(dict(os.environ), PORT=str(port),
                              PROMETHEUS_MULTIPROC_DIR=str(prometheus))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE),
                                                              env.get("PYTHONPATH")]))
            argv = [sys.executable, "-m", "gunicorn", "--config",
                    str(HERE / "baseline_gunicorn_conf.py"), "baseline_app:app"]
            database_url = None
        else:
            if target.database == "postgres":
                assert self.postgres is not None
                database_url = self.postgres.new_database(f"bench_{folder.name}")
            else:
                database_url = f"sqlite:///{folder / 'store.sqlite3'}"
            env = service_env(dict(os.environ), PORT=str(port),
                              PROMETHEUS_MULTIPROC_DIR=str(prometheus),
                              DATABASE_URL=database_url, DRIFT_VERIFICATION_TOKEN=TOKEN,
                              SEGMENT_WRITE_KEY=WRITE_KEY, SEGMENT_HOST=fake.url, **target.env)
            argv = [console_script("drift-segment-source"), "serve"]
        process = Process(target.name, argv, env, folder / "server.log", cwd=folder)
        self.url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, self.url + "/healthz")
        # Both workers must have the app loaded before the clock starts.
        deadline = time.monotonic() + 30
        workers = int(target.env.get("WEB_CONCURRENCY") or self._workers())
        while len(children(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        return process, database_url

    @staticmethod
    def _workers() -> int:
        from drift_segment_source import gunicorn_conf

        return int(gunicorn_conf.workers)

    def run_one(self, target: Target, repeat: int, fake: FakeSegmentProcess) -> IngestRun:
        slug = re.sub(r"[^a-z]+", "_", target.name.lower()).strip("_")[:20]
        folder = self.work / f"ingest_{repeat}_{self.run_counter}_{slug}"
        folder.mkdir()
        process, database_url = self.start(target, folder, fake)
        try:
            url = self.url + "/webhooks/drift"
            if self.settings.warmup:
                run_wrk(url, self.settings, self.settings.warmup, self.templates_file,
                        self.next_run_id(), folder / "wrk-warmup.txt")
            before = count_rows(database_url) if database_url else None
            delivered_before = fake.stats()["messages"]
            tree = [process.pid, *children(process.pid)]
            database_tree = self.postgres.pids() if target.database == "postgres" \
                and self.postgres else []
            cpu_before, wrk_before = cpu_seconds(tree), _children_cpu()
            database_before = cpu_seconds(database_tree)
            busy_before, wall_before = machine_busy()
            result = run_wrk(url, self.settings, self.settings.seconds, self.templates_file,
                             self.next_run_id(), folder / "wrk.txt")
            server_cpu, wrk_cpu = cpu_seconds(tree) - cpu_before, _children_cpu() - wrk_before
            database_cpu = cpu_seconds(database_tree) - database_before
            busy_after, wall_after = machine_busy()
            machine_cores = (busy_after - busy_before) / (wall_after - wall_before)
            stored = count_rows(database_url) - before if database_url and before is not None \
                else None
            delivered = fake.stats()["messages"] - delivered_before
        finally:
            process.stop()
        errors = result["errors"]
        seconds = result["duration_us"] / 1e6
        run = IngestRun(
            target=target.name, repeat=repeat,
            accepted_per_s=result["accepted"] / seconds,
            p50_ms=result["latency_us"]["p50"] / 1000, p99_ms=result["latency_us"]["p99"] / 1000,
            requests=result["requests"], accepted=result["accepted"], refused=result["refused"],
            socket_errors=errors["connect"] + errors["read"] + errors["write"]
            + errors["timeout"],
            first_refusal=result["first_refusal"], stored=stored,
            delivered_during=delivered if target.kind == "service" else None,
            server_cores=server_cpu / seconds, wrk_cores=wrk_cpu / seconds,
            machine_cores=machine_cores,
            database_cores=database_cpu / seconds if database_tree else None,
        )
        log(f"ingest {target.name} #{repeat}: {run.accepted_per_s:,.0f} accepted/s, "
            f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, refused {run.refused}, "
            f"socket errors {run.socket_errors}, CPU: server {run.server_cores:.2f} cores, "
            f"wrk {run.wrk_cores:.2f}, "
            + (f"PostgreSQL {run.database_cores:.2f}, " if run.database_cores is not None else "")
            + f"machine {run.machine_cores:.2f} cores"
            + (f", stored {stored}" if stored is not None else ""))
        return run

    def failures(self) -> list[str]:
        """Everything that must not happen: refused webhooks, socket errors, lost rows."""
        found = []
        for run in self.runs:
            if run.refused:
                found.append(f"{run.target} #{run.repeat}: {run.refused} answers were not "
                             f"'200 accepted' (first: {run.first_refusal})")
            if run.socket_errors:
                found.append(f"{run.target} #{run.repeat}: {run.socket_errors} socket errors")
            # Rows stored but not counted are requests in flight when wrk stopped.
            if run.stored is not None and not (
                    run.accepted <= run.stored <= run.accepted + self.settings.connections):
                found.append(f"{run.target} #{run.repeat}: {run.accepted} accepted but "
                             f"{run.stored} rows stored")
        return found

    def summary(self) -> list[dict[str, Any]]:
        """Medians over the repeats, per target, with the ratio to the baseline."""
        rows = []
        baseline = None
        for target in self.targets():
            runs = [run for run in self.runs if run.target == target.name]
            if not runs:
                continue
            row = {
                "target": target.name, "kind": target.kind,
                "accepted_per_s": statistics.median(run.accepted_per_s for run in runs),
                "p50_ms": statistics.median(run.p50_ms for run in runs),
                "p99_ms": statistics.median(run.p99_ms for run in runs),
                "runs": len(runs),
                "delivered_during": statistics.median(run.delivered_during or 0 for run in runs)
                if target.kind == "service" else None,
            }
            if target.kind == "baseline":
                baseline = row
            rows.append(row)
        for row in rows:
            row["ratio"] = row["accepted_per_s"] / baseline["accepted_per_s"] if baseline else None
        return rows


# -- latency at fixed offered rates (open loop) -----------------------------------------------


@dataclass
class PacedRun:
    """One paced wrk run against one target at one offered rate."""

    target: str
    rate: int
    repeat: int
    requests: int
    achieved_per_s: float
    refused: int
    socket_errors: int
    first_refusal: str
    histogram: list[tuple[int, int]]
    stored: int | None = None
    server_cores: float = 0.0
    machine_cores: float = 0.0


def floor_commits(folder: Path, rate: int, seconds: int) -> list[tuple[int, int]]:
    """The latency histogram (µs) of one-row synchronous=FULL SQLite commits at ``rate``/s
    (bench/floor.py), on the disk the service's database is on."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([sys.executable, str(HERE / "floor.py"), str(folder), str(rate),
                               str(seconds)], capture_output=True, text=True,
                              timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchFailure("the floor measurement did not finish") from None
    found = re.search(r"^FLOOR_RESULT (.*)$", done.stdout, re.M)
    if not found:
        raise BenchFailure(f"the floor measurement failed:\n{done.stderr[-2000:]}")
    return [(int(value), int(count)) for value, count in json.loads(found.group(1))["histogram"]]


class Latency:
    """Paced runs (fixed offered rates) against the baseline and the service, and the floor
    (one FULL commit of one row) at the same rates, alternating, repeated."""

    def __init__(self, settings: Settings, ingest: Ingest) -> None:
        self.settings = settings
        self.ingest = ingest
        self.runs: list[PacedRun] = []
        self.floor: dict[int, list[list[tuple[int, int]]]] = {}

    def run_all(self, fake: FakeSegmentProcess) -> None:
        for repeat in range(1, self.settings.repeats + 1):
            for rate in self.settings.rates:
                histogram = floor_commits(self.ingest.work / "floor", rate,
                                          min(self.settings.rate_seconds, 10))
                self.floor.setdefault(rate, []).append(histogram)
                log(f"floor at {rate}/s #{repeat}: p50 {percentile(histogram, 50) / 1000:.2f} "
                    f"ms, p99 {percentile(histogram, 99) / 1000:.2f} ms, p99.9 "
                    f"{percentile(histogram, 99.9) / 1000:.2f} ms")
            for target in self.ingest.targets():
                self.run_target(target, repeat, fake)

    def run_target(self, target: Target, repeat: int, fake: FakeSegmentProcess) -> None:
        slug = re.sub(r"[^a-z]+", "_", target.name.lower()).strip("_")[:20]
        folder = self.ingest.work / f"paced_{repeat}_{self.ingest.run_counter}_{slug}"
        folder.mkdir()
        process, database_url = self.ingest.start(target, folder, fake)
        url = self.ingest.url + "/webhooks/drift"
        try:
            # Warm: imports, first connections, the SQLite page cache.
            run_wrk(url, self.settings, 2, self.ingest.templates_file,
                    self.ingest.next_run_id(), folder / "wrk-warmup.txt",
                    rate=min(self.settings.rates))
            for rate in self.settings.rates:
                before = count_rows(database_url) if database_url else None
                tree = [process.pid, *children(process.pid)]
                cpu_before = cpu_seconds(tree)
                busy_before, wall_before = machine_busy()
                result = run_wrk(url, self.settings, self.settings.rate_seconds,
                                 self.ingest.templates_file, self.ingest.next_run_id(),
                                 folder / f"wrk-{rate}.txt", rate=rate)
                seconds = result["duration_us"] / 1e6
                server_cores = (cpu_seconds(tree) - cpu_before) / seconds
                busy_after, wall_after = machine_busy()
                stored = (count_rows(database_url) - before
                          if database_url and before is not None else None)
                errors = result["errors"]
                run = PacedRun(
                    target=target.name, rate=rate, repeat=repeat, requests=result["requests"],
                    achieved_per_s=result["requests"] / seconds, refused=result["refused"],
                    socket_errors=errors["connect"] + errors["read"] + errors["write"]
                    + errors["timeout"], first_refusal=result["first_refusal"],
                    histogram=[(int(v), int(c)) for v, c in result.get("histogram", [])],
                    stored=stored, server_cores=server_cores,
                    machine_cores=(busy_after - busy_before) / (wall_after - wall_before))
                self.runs.append(run)
                log(f"paced {target.name} at {rate}/s #{repeat}: {run.achieved_per_s:,.0f}/s, "
                    f"p50 {percentile(run.histogram, 50) / 1000:.2f} ms, p99 "
                    f"{percentile(run.histogram, 99) / 1000:.2f} ms, p99.9 "
                    f"{percentile(run.histogram, 99.9) / 1000:.2f} ms, server "
                    f"{run.server_cores:.2f} cores, machine {run.machine_cores:.2f}")
        finally:
            process.stop()

    def failures(self) -> list[str]:
        found = []
        for run in self.runs:
            if run.refused or run.socket_errors:
                found.append(f"paced {run.target} at {run.rate}/s #{run.repeat}: "
                             f"{run.refused} not '200 accepted', {run.socket_errors} socket "
                             f"errors (first: {run.first_refusal})")
            if run.stored is not None and not (
                    run.requests - run.refused <= run.stored
                    <= run.requests + self.settings.rate_connections):
                found.append(f"paced {run.target} at {run.rate}/s #{run.repeat}: "
                             f"{run.requests - run.refused} accepted but {run.stored} stored")
        return found

    def summary(self) -> list[dict[str, Any]]:
        """Per rate and target: percentiles of the pooled repeats (ms), ratios to the
        baseline; the floor first."""
        rows: list[dict[str, Any]] = []
        for rate in self.settings.rates:
            floor = pooled(self.floor.get(rate, []))
            rows.append({"rate": rate, "target": "floor: one SQLite FULL commit of one row",
                         "kind": "floor", "achieved_per_s": float(rate),
                         **self._percentiles(floor)})
            base: dict[str, Any] | None = None
            for target in self.ingest.targets():
                runs = [run for run in self.runs
                        if run.target == target.name and run.rate == rate]
                if not runs:
                    continue
                row = {"rate": rate, "target": target.name, "kind": target.kind,
                       "achieved_per_s": statistics.median(run.achieved_per_s for run in runs),
                       "server_cores": statistics.median(run.server_cores for run in runs),
                       **self._percentiles(pooled([run.histogram for run in runs]))}
                if target.kind == "baseline":
                    base = row
                if base is not None:
                    for name in ("p50", "p99", "p999"):
                        row[f"{name}_ratio"] = (row[f"{name}_ms"] / base[f"{name}_ms"]
                                                if base[f"{name}_ms"] else None)
                rows.append(row)
        return rows

    @staticmethod
    def _percentiles(histogram: list[tuple[int, int]]) -> dict[str, Any]:
        return {"samples": sum(count for _, count in histogram),
                "p50_ms": percentile(histogram, 50) / 1000,
                "p99_ms": percentile(histogram, 99) / 1000,
                "p999_ms": percentile(histogram, 99.9) / 1000}


# -- seeding the store ----------------------------------------------------------------------

_TEMPLATES: list[workload.Template] = []


def _seed_chunk(span: tuple[int, int]
                ) -> tuple[float, list[tuple[str, int, str, str]], list[str]]:
    """The receipt time, rows (type, org, dedupe key, payload) and their messageIds for ids
    ``span`` (events without a time of their own take the receipt time into their ids)."""
    rows, ids = [], []
    received_at = round(time.time(), 3)
    for number in range(*span):
        template = _TEMPLATES[number % len(_TEMPLATES)]
        event_type, org_id, key, payload, identity = workload.stored_form(
            template.body(str(number)), received_at)
        rows.append((event_type, org_id, key, payload))
        ids.extend(workload.message_ids(event_type, org_id, identity, template.calls))
    return received_at, rows, ids


def _pool_worker_signals() -> None:
    # Pool workers inherit the benchmark's handlers; they should just end when told to.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)


def seed(database_url: str, count: int, templates: list[workload.Template],
         first_id: int) -> set[str]:
    """Store ``count`` distinct webhooks as ``Store.accept`` would (same columns and values),
    in large transactions; the messageIds their delivery must produce."""
    import sqlalchemy

    from drift_segment_source.store.db import make_engine, webhooks
    from drift_segment_source.store.store import Store

    engine = make_engine(database_url)
    Store(engine).migrate()
    expected: set[str] = set()
    _TEMPLATES[:] = templates
    chunk = 10_000
    spans = [(start, min(start + chunk, first_id + count))
             for start in range(first_id, first_id + count, chunk)]
    started = time.monotonic()
    context = multiprocessing.get_context("fork")
    with context.Pool(max(1, os.cpu_count() or 1), initializer=_pool_worker_signals) as pool:
        for received_at, rows, ids in pool.imap(_seed_chunk, spans):
            now = time.time()
            with engine.begin() as connection:
                connection.execute(sqlalchemy.insert(webhooks), [
                    {"org_id": org_id, "event_type": event_type, "dedupe_key": key,
                     "payload": payload, "received_at": received_at, "queued_at": now,
                     "state": "pending", "hold_reason": None, "attempts": 0,
                     "next_attempt_at": now}
                    for event_type, org_id, key, payload in rows])
            expected.update(ids)
        pool.close()
        pool.join()
    engine.dispose()
    log(f"stored {count:,} webhooks in {time.monotonic() - started:.1f}s")
    return expected


# -- delivery -------------------------------------------------------------------------------


@dataclass
class Drain:
    """One worker draining a stored backlog into the fake Segment."""

    name: str
    database: str
    webhooks: int
    expected: int
    received: int
    distinct: int
    missing: int
    duplicates: int
    unexpected: int
    wall_s: float  # worker start → last message received
    steady_s: float  # first batch → last batch received
    startup_s: float  # worker start → first batch received
    batches: int
    batch_messages: list[int]
    batch_kib: list[float]
    peak_rss_mib: float | None
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    timed_out: bool = False
    worker_cpu_s: float = 0.0  # CPU time of the worker process(es), start-up included

    @property
    def cpu_us_per_event(self) -> float:
        """The worker's CPU per message delivered: less disturbed by other load than events/s."""
        return self.worker_cpu_s / self.received * 1e6 if self.received else 0.0

    @property
    def events_per_s(self) -> float:
        return self.received / self.wall_s if self.wall_s else 0.0

    @property
    def steady_events_per_s(self) -> float:
        return self.received / self.steady_s if self.steady_s else 0.0


class RssSampler(threading.Thread):
    """Samples VmRSS and VmHWM of one process from /proc every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.started_at = time.monotonic()

    def read(self) -> tuple[int, int] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))

    def run(self) -> None:
        while not self.done.is_set():
            found = self.read()
            if found:
                rss, hwm = found
                self.peak_kib = max(self.peak_kib, rss, hwm)
                self.samples.append((time.monotonic() - self.started_at, rss / 1024))
            self.done.wait(self.interval)


def drain(name: str, database: str, database_url: str, count: int,
          templates: list[workload.Template], folder: Path, timeout: int,
          first_id: int, workers: int = 1) -> Drain:
    """Store ``count`` webhooks, start ``workers`` worker processes (more than one only on
    PostgreSQL, where SKIP LOCKED shares the rows), wait for the fake to get every message."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = seed(database_url, count, templates, first_id)
    fake = FakeSegmentProcess(folder, "fake-segment")
    env = service_env(dict(os.environ), DATABASE_URL=database_url,
                      DRIFT_VERIFICATION_TOKEN=TOKEN, SEGMENT_WRITE_KEY=WRITE_KEY,
                      SEGMENT_HOST=fake.url, DELIVERY_IN_WEB="false")
    started = time.time()
    pool = [Process(f"worker {n} ({name})", [console_script("drift-segment-source"), "worker"],
                    env, folder / f"worker-{n}.log", cwd=folder) for n in range(workers)]
    worker = pool[0]
    sampler = RssSampler(worker.pid)
    sampler.start()
    timed_out = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            stats = fake.stats()
            if stats["messages"] >= len(expected):
                break
            for process in pool:
                if not process.alive():
                    raise BenchFailure(f"a worker exited:\n{process.tail()}")
            if time.monotonic() > deadline:
                timed_out = True
                log(f"{name}: drain not finished after {timeout}s "
                    f"({stats['messages']:,}/{len(expected):,})")
                break
            time.sleep(0.1 if len(expected) < 200_000 else 0.5)
        time.sleep(0.5)  # anything sent twice would show up now
        worker_cpu = cpu_seconds([process.pid for process in pool])
        stats = fake.stats()
        rss = sampler.read()
        sampler.peak_kib = max(sampler.peak_kib, *(rss or (0, 0)))
    finally:
        sampler.done.set()
        for process in pool:
            process.stop()
        received = fake.received_ids()
        fake.stop()
    distinct = set(received)
    first, last = stats["first_at"] or started, stats["last_at"] or started
    result = Drain(
        name=name, database=database, webhooks=count, expected=len(expected),
        received=sum(received.values()), distinct=len(distinct),
        missing=len(expected - distinct), duplicates=sum(n - 1 for n in received.values()),
        unexpected=len(distinct - expected), wall_s=last - started, steady_s=last - first,
        startup_s=first - started, batches=stats["batches"],
        batch_messages=stats["batch_messages"],
        batch_kib=[size / 1024 for size in stats["batch_bytes"]],
        peak_rss_mib=sampler.peak_kib / 1024 if sampler.peak_kib else None,
        rss_samples=sampler.samples, timed_out=timed_out,
        worker_cpu_s=worker_cpu if "worker_cpu" in locals() else 0.0)
    log(f"{name}: {result.received:,} messages in {result.wall_s:.1f}s "
        f"({result.events_per_s:,.0f}/s; steady {result.steady_events_per_s:,.0f}/s; "
        f"worker CPU {result.cpu_us_per_event:.0f} µs per event), "
        f"peak RSS {result.peak_rss_mib or 0:.0f} MiB, missing {result.missing}, "
        f"duplicates {result.duplicates}")
    return result


@dataclass
class DirectPost:
    messages: int
    batch_size: int
    seconds: float
    batches: int

    @property
    def events_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def direct_post(count: int, batch_size: int, folder: Path) -> DirectPost:
    """The delivery baseline: bench/direct_post.py posting pre-built messages to a fresh fake."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeSegmentProcess(folder, "fake-segment")
    try:
        process = Process("direct post loop",
                          [sys.executable, str(HERE / "direct_post.py"), fake.url, WRITE_KEY,
                           str(count), str(batch_size)],
                          dict(os.environ), folder / "direct-post.log")
        try:
            process.popen.wait(timeout=600)
        except subprocess.TimeoutExpired:
            raise BenchFailure("the direct post loop did not finish in 600s") from None
        finally:
            process.stop()
        text = process.log_path.read_text()
        found = re.search(r"^DIRECT_RESULT (.*)$", text, re.M)
        if not found:
            raise BenchFailure(f"direct post loop failed:\n{text[-2000:]}")
        result = json.loads(found.group(1))
        stats = fake.stats()
        if stats["messages"] != count:
            raise BenchFailure(f"direct post: the fake got {stats['messages']} of {count}")
    finally:
        fake.stop()
    outcome = DirectPost(count, batch_size, result["seconds"], stats["batches"])
    log(f"direct post loop: {count:,} messages in {outcome.seconds:.2f}s "
        f"({outcome.events_per_s:,.0f}/s)")
    return outcome


# -- the report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    from drift_segment_source import gunicorn_conf

    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "code": code_version(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].split(" Copyright")[0],
        "gunicorn": (f"{gunicorn_conf.worker_class}, {gunicorn_conf.workers} workers x "
                     f"{gunicorn_conf.threads} threads, keepalive {gunicorn_conf.keepalive}s"),
    }


def code_version() -> str:
    """The commit measured, and whether the package differs from it (others edit it too)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--", "drift_segment_source",
                                        "gunicorn.conf.py").splitlines()]
    return commit + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return (f"{ordered[0]:.0f} / {statistics.median(ordered):.0f} / {ordered[-1]:.0f}")


def report(settings: Settings, info: dict[str, str], templates: list[workload.Template],
           ingest: Ingest | None, latency: Latency | None, delivery: list[Drain],
           direct: DirectPost | None,
           backlog: list[Drain], failures: list[str], started: datetime) -> str:
    lines = [f"# drift-segment-source benchmark, {started:%Y-%m-%d %H:%M} UTC, {info['host']}",
             ""]
    lines += [
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, "
        f"Linux {info['kernel']}; load generator, fake Segment and database on the same cores"
        f" (load average at start: {info['load']})",
        f"- Software: Python {info['python']}, SQLite {info['sqlite']}"
        + (f", {info['postgresql']}" if info.get("postgresql") else ", PostgreSQL not run")
        + f", {info['wrk']}",
        f"- Code: {info['code']}",
        f"- gunicorn (service and baseline): {info['gunicorn']}",
        f"- Workload: {len(templates)} webhook bodies from `fixtures/drift` covering all "
        f"{len({t.event_type for t in templates})} event types, every request a distinct "
        f"Drift event; wrk {settings.wrk_threads} threads, {settings.connections} connections, "
        f"{settings.seconds}s per run after {settings.warmup}s warm-up, {settings.repeats} "
        "repeat(s) alternating baseline and service; medians over the repeats"
        + (" (**quick mode**: smoke test, not a measurement)" if settings.quick else ""),
        "",
    ]
    if ingest is not None and ingest.runs:
        lines += ["## Ingest: `POST /webhooks/drift`", "",
                  "| target | accepted webhooks/s | p50 ms | p99 ms | service/baseline | "
                  "target (≥ 0.6×, p99 ≤ 20 ms) |",
                  "|---|---:|---:|---:|---:|---|"]
        for row in ingest.summary():
            verdict = "-" if row["kind"] == "baseline" else _met(
                row["ratio"] >= TARGET_INGEST_RATIO and row["p99_ms"] <= TARGET_P99_MS)
            lines.append(f"| {row['target']} | {row['accepted_per_s']:,.0f} | "
                         f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['ratio']:.2f}× | "
                         f"{verdict} |")
        lines += ["", "<details><summary>Every run</summary>", "",
                  "| run | target | requests | accepted/s | p50 ms | p99 ms | not 200 accepted"
                  " | rows stored | delivered during run | CPU cores: server / wrk / "
                  "PostgreSQL / whole machine |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for run in ingest.runs:
            lines.append(f"| {run.repeat} | {run.target} | {run.requests:,} | "
                         f"{run.accepted_per_s:,.0f} | {run.p50_ms:.1f} | {run.p99_ms:.1f} | "
                         f"{run.refused + run.socket_errors} | "
                         f"{'-' if run.stored is None else f'{run.stored:,}'} | "
                         f"{'-' if run.delivered_during is None else f'{run.delivered_during:,}'}"
                         f" | {run.server_cores:.2f} / {run.wrk_cores:.2f} / "
                         + ("-" if run.database_cores is None else f"{run.database_cores:.2f}")
                         + f" / {run.machine_cores:.2f} |")
        lines += ["", "The whole machine's CPU includes the database server, the fake Segment "
                  "and anything else running; well above server + wrk means the numbers are "
                  "disturbed.", "", "</details>", ""]
    paced = latency.summary() if latency is not None and latency.runs else []
    if paced:
        lines += ["## Latency at fixed offered rates (open loop)", "",
                  f"wrk's delay() hook sends each request at its slot of a fixed schedule, "
                  f"whatever the answers before it took ({settings.rate_connections} "
                  f"connections, {settings.rate_seconds}s per rate after a 2s warm-up, all "
                  "ten types, every request a distinct event); the service delivers to the "
                  "fake Segment meanwhile. Percentiles of all repeats pooled. The floor is "
                  "one SQLite `synchronous=FULL` commit of one row on the same disk "
                  "(`floor.py`), at the same rate, in the same run.", "",
                  "| offered/s | target | achieved/s | samples | p50 ms | p99 ms | p99.9 ms | "
                  "÷ bare p50 | ÷ bare p99 | ÷ bare p99.9 | server CPU cores |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in paced:
            ratios = " | ".join(
                "-" if row["kind"] != "service" or row.get(f"{name}_ratio") is None
                else f"{row[f'{name}_ratio']:.2f}×" for name in ("p50", "p99", "p999"))
            cores = f"{row['server_cores']:.2f}" if "server_cores" in row else "-"
            lines.append(f"| {row['rate']} | {row['target']} | {row['achieved_per_s']:,.0f} | "
                         f"{row['samples']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                         f"{row['p999_ms']:.2f} | {ratios} | {cores} |")
        lines.append("")
    if delivery or direct:
        lines += ["## Delivery: stored webhooks → loopback fake Segment", "",
                  "| path | messages | seconds | events/s | steady events/s | batches | "
                  "messages per batch (min / median / max) | KiB per batch (median) | "
                  "vs direct loop | target (≥ 10,000/s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        if direct:
            lines.append(f"| direct `request.post` loop, pre-built messages (baseline) | "
                         f"{direct.messages:,} | {direct.seconds:.2f} | "
                         f"{direct.events_per_s:,.0f} | - | {direct.batches:,} | "
                         f"{direct.batch_size} | - | 1.00× | - |")
        for run in delivery:
            ratio = (f"{run.events_per_s / direct.events_per_s:.2f}×"
                     if direct and direct.events_per_s else "-")
            lines.append(
                f"| `worker`, {run.database} | {run.received:,} | {run.wall_s:.1f} | "
                f"{run.events_per_s:,.0f} | {run.steady_events_per_s:,.0f} | {run.batches:,} | "
                f"{_quantiles([float(n) for n in run.batch_messages])} | "
                f"{statistics.median(run.batch_kib) if run.batch_kib else 0:.0f} | {ratio} | "
                f"{_met(run.events_per_s >= TARGET_EVENTS_PER_S)} |")
        lines += ["", "events/s counts from the worker's start (start-up and migration "
                  "included); steady events/s from the first batch to the last.", ""]
    if backlog:
        lines += ["## Backlog drain: memory and loss", "",
                  "| database | backlog | drain seconds | events/s | peak RSS (VmHWM) MiB | "
                  "messageIds expected | received | missing | duplicates | unexpected | "
                  "target (≤ 200 MiB, none missing) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for run in backlog:
            ok = (run.peak_rss_mib or 0) <= TARGET_RSS_MIB and run.missing == 0 \
                and not run.timed_out
            lines.append(
                f"| {run.database} | {run.webhooks:,} | {run.wall_s:.1f}"
                f"{' (timed out)' if run.timed_out else ''} | {run.events_per_s:,.0f} | "
                f"{run.peak_rss_mib or 0:.0f} | {run.expected:,} | {run.received:,} | "
                f"{run.missing:,} | {run.duplicates:,} | {run.unexpected:,} | {_met(ok)} |")
        lines.append("")
    lines += ["## Against the targets", ""]
    lines += targets_table(ingest, paced, delivery, backlog)
    if ingest is not None and ingest.runs:
        for row in ingest.summary():
            if row["kind"] == "service":
                lines.append(
                    f"- Durable ingest, {row['target']}: {row['ratio']:.2f}× the baseline "
                    f"(target ≥ {TARGET_INGEST_RATIO}×: "
                    f"{_met(row['ratio'] >= TARGET_INGEST_RATIO)}), p99 {row['p99_ms']:.1f} ms "
                    f"(target ≤ {TARGET_P99_MS:g} ms: {_met(row['p99_ms'] <= TARGET_P99_MS)}).")
        base = next((row for row in ingest.summary() if row["kind"] == "baseline"), None)
        if base:
            lines.append(f"- The baseline itself: p99 {base['p99_ms']:.1f} ms at "
                         f"{base['accepted_per_s']:,.0f} req/s with {settings.connections} "
                         "closed-loop connections (by Little's law the mean latency is "
                         "connections ÷ throughput).")
    for run in delivery:
        lines.append(f"- Delivery, {run.database}: {run.events_per_s:,.0f} events/s "
                     f"(target ≥ {TARGET_EVENTS_PER_S:,}: "
                     f"{_met(run.events_per_s >= TARGET_EVENTS_PER_S)}).")
    for run in backlog:
        lines.append(f"- Backlog of {run.webhooks:,} on {run.database}: peak RSS "
                     f"{run.peak_rss_mib or 0:.0f} MiB (target ≤ {TARGET_RSS_MIB} MiB: "
                     f"{_met((run.peak_rss_mib or 0) <= TARGET_RSS_MIB)}); "
                     f"{run.missing:,} missing, {run.duplicates:,} duplicates "
                     f"(no dropped message: {_met(run.missing == 0 and not run.timed_out)}).")
    if failures:
        lines += ["", "## FAILED checks", ""] + [f"- {failure}" for failure in failures]
    lines += ["", f"Rerun: `{'BENCH_QUICK=1 ' if settings.quick else ''}bench/run` "
              "(see bench/README.md)."]
    return "\n".join(lines) + "\n"


def targets_table(ingest: Ingest | None, paced: list[dict[str, Any]],
                  delivery: list[Drain], backlog: list[Drain]) -> list[str]:
    """The table of the targets, from this run's figures."""
    rows = []

    def paced_row(target: str, rate: int) -> dict[str, Any] | None:
        return next((row for row in paced if row["rate"] == rate
                     and row["target"].startswith(target)), None)

    service, bare, floor = (paced_row("service, SQLite", 200), paced_row("baseline", 200),
                            paced_row("floor", 200))
    if service and bare and service.get("p99_ratio") is not None:
        rows.append(f"| p99 at 200 webhooks/s, SQLite ÷ bare Flask p99 at 200/s | "
                    f"{service['p99_ms']:.2f} ÷ {bare['p99_ms']:.2f} ms = "
                    f"{service['p99_ratio']:.2f}× | ≤ 1.5× | "
                    f"{_met(service['p99_ratio'] <= TARGET_P99_RATIO)} |")
    if service and bare and floor:
        limit = floor["p50_ms"] + bare["p50_ms"]
        rows.append(f"| p50 at 200 webhooks/s, SQLite | {service['p50_ms']:.2f} ms | ≤ floor "
                    f"{floor['p50_ms']:.2f} + bare {bare['p50_ms']:.2f} = {limit:.2f} ms | "
                    f"{_met(service['p50_ms'] <= limit)} |")
    for row in ingest.summary() if ingest is not None and ingest.runs else []:
        if row["kind"] == "service" and "=" not in row["target"]:
            rows.append(f"| durable ingest at saturation ÷ bare Flask, {row['target']} | "
                        f"{row['ratio']:.2f}× | ≥ 0.6× | "
                        f"{_met(row['ratio'] >= TARGET_INGEST_RATIO)} |")
    for run in delivery:
        if "2 workers" not in run.database:
            rows.append(f"| delivery, one worker, {run.database} | {run.events_per_s:,.0f} "
                        f"events/s | ≥ 10,000 | {_met(run.events_per_s >= TARGET_EVENTS_PER_S)}"
                        " |")
    for run in backlog:
        ok = (run.peak_rss_mib or 0) <= TARGET_RSS_MIB and run.missing == 0 \
            and not run.timed_out
        rows.append(f"| {run.webhooks:,} backlog drain peak RSS, {run.database} | "
                    f"{run.peak_rss_mib or 0:.0f} MiB, {run.missing:,} lost | ≤ 200 MiB, 0 lost"
                    f" | {_met(ok)} |")
    if not rows:
        return []
    return ["| measure | this run | target | |", "|---|---:|---|---|", *rows, ""]


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    settings = Settings.from_environment()
    if shutil.which("wrk") is None and "ingest" in settings.phases:
        log("wrk is not installed: apt-get install wrk")
        return 2
    started = datetime.now(UTC)

    def out_of_time(signum: int, frame: Any) -> None:
        raise BenchFailure(f"the benchmark took longer than BENCH_TIMEOUT="
                           f"{settings.total_timeout}s")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, out_of_time)
    signal.signal(signal.SIGTERM, interrupted)
    signal.alarm(settings.total_timeout)
    work = Path(tempfile.mkdtemp(prefix="dss-bench-"))
    postgres: Postgres | None = None
    failures: list[str] = []
    ingest: Ingest | None = None
    latency: Latency | None = None
    delivery: list[Drain] = []
    backlog: list[Drain] = []
    direct: DirectPost | None = None
    info = machine()
    try:
        templates = workload.interleaved(workload.load_templates())
        templates_file = work / "templates.txt"
        templates_file.write_text("\n".join(t.text for t in templates) + "\n", encoding="utf-8")
        bin_dir = postgres_binaries() if settings.postgres != "0" else None
        if settings.postgres == "1" and bin_dir is None:
            raise BenchFailure("BENCH_POSTGRES=1 but no PostgreSQL binaries were found")
        if bin_dir and settings.phases & {"ingest", "latency", "delivery"}:
            log("starting PostgreSQL")
            postgres = Postgres(bin_dir)
            info["postgresql"] = postgres.version()
        if "ingest" in settings.phases:
            ingest = Ingest(settings, work, templates_file, postgres)
            fake = FakeSegmentProcess(work / "ingest-fake", "fake-segment")
            try:
                ingest.run_all(fake)
            finally:
                fake.stop()
            failures += ingest.failures()
        if "latency" in settings.phases:
            latency = Latency(settings, ingest or Ingest(settings, work, templates_file,
                                                         postgres))
            fake = FakeSegmentProcess(work / "paced-fake", "fake-segment")
            try:
                latency.run_all(fake)
            finally:
                fake.stop()
            failures += latency.failures()
        if "delivery" in settings.phases:
            databases = [("sqlite", f"sqlite:///{work / 'delivery.sqlite3'}")]
            if postgres is not None:
                databases.append(("PostgreSQL", postgres.new_database("bench_delivery")))
            for database, url in databases:
                delivery.append(drain(f"delivery {database}", database, url,
                                      settings.delivery_n, templates,
                                      work / f"delivery-{database}", settings.drain_timeout,
                                      first_id=10**12))
            if postgres is not None:
                # Scale-out as documented: two `worker` processes on one PostgreSQL.
                delivery.append(drain("delivery PostgreSQL, 2 workers", "PostgreSQL, 2 workers",
                                      postgres.new_database("bench_delivery_two"),
                                      settings.delivery_n, templates,
                                      work / "delivery-PostgreSQL-2", settings.drain_timeout,
                                      first_id=3 * 10**12, workers=2))
            batch = int(statistics.median(delivery[0].batch_messages or [500]))
            direct = direct_post(settings.delivery_n, batch, work / "direct")
        if postgres is not None:
            postgres.stop()
            postgres = None
        if "backlog" in settings.phases:
            backlog.append(drain("backlog sqlite", "sqlite",
                                 f"sqlite:///{work / 'backlog.sqlite3'}", settings.backlog,
                                 templates, work / "backlog", settings.drain_timeout,
                                 first_id=2 * 10**12))
        for run in delivery + backlog:
            if run.missing or run.unexpected or run.timed_out:
                failures.append(f"{run.name}: {run.missing:,} messageIds missing, "
                                f"{run.unexpected:,} unexpected"
                                + (" (timed out)" if run.timed_out else ""))
    except (BenchFailure, KeyboardInterrupt) as error:
        failures.append(f"benchmark stopped: {error!r}")
        log(str(error))
    finally:
        signal.alarm(0)
        stop_everything()
        if postgres is not None:
            postgres.stop()
    finished_code = code_version()
    if finished_code != info["code"]:
        info["code"] += f" (**changed during the run**, at the end: {finished_code})"
    text = report(settings, info, templates if "templates" in locals() else [], ingest,
                  latency, delivery, direct, backlog, failures, started)
    settings.results.mkdir(parents=True, exist_ok=True)
    name = f"{started:%Y-%m-%d-%H%M}-{info['host']}{'-quick' if settings.quick else ''}.md"
    (settings.results / name).write_text(text)
    if not settings.quick:  # latest.md is the reference table: never a smoke test
        (settings.results / "latest.md").write_text(text)
    raw = {"settings": {k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path)
                            else v) for k, v in vars(settings).items()},
           "machine": info,
           "ingest": [vars(run) for run in ingest.runs] if ingest else [],
           "paced": [vars(run) for run in latency.runs] if latency else [],
           "floor": latency.floor if latency else {},
           "delivery": [{k: v for k, v in vars(run).items() if k != "rss_samples"}
                        for run in delivery],
           "direct": vars(direct) if direct else None,
           "backlog": [vars(run) for run in backlog], "failures": failures}
    # Raw numbers stay out of git (bench/results/raw/ is ignored); the Markdown is the record.
    raw_dir = settings.results / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / name.replace(".md", ".json")).write_text(json.dumps(raw, indent=1))
    print(text)
    log(f"report: {settings.results / name}")
    if failures:
        log("FAILED: " + "; ".join(failures))
        return 1
    if os.environ.get("BENCH_KEEP_WORK") != "1":
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work folder kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
