"""``bench/run profile``: where the service's time goes, sampled with py-spy under load.

Ingest: the service (SQLite by default) under the benchmark's wrk load; every gunicorn worker
is recorded twice: ``wall`` (py-spy --idle: waiting counts too, so commits, lock waits and the
GIL show up) and ``gil`` (py-spy --gil: only the thread holding the GIL, i.e. where the
Python CPU goes). Delivery: the ``worker`` process draining a stored backlog, same two modes.

Raw collapsed stacks and a summary (per-thread split, top self time, inclusive time of the
service's steps) go to ``bench/results/profiles/<stamp>/``; the summary is printed.

Settings: BENCH_PROFILE_SECONDS (20), BENCH_PROFILE_RATE (100 Hz), BENCH_PROFILE_DB
(sqlite | postgres), BENCH_PROFILE_N (webhooks stored for the delivery profile, 250000),
BENCH_PROFILE_MODES (wall,gil; also cpu: py-spy's default, threads on a CPU or runnable),
BENCH_PROFILE_ENV (service settings for the ingest profile, e.g. DELIVERY_IN_WEB=false).
Arguments: ``ingest`` and/or ``delivery`` (default both).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import workload

import bench
from bench import (
    BenchFailure,
    FakeSegmentProcess,
    Ingest,
    Postgres,
    Process,
    Settings,
    Target,
    children,
    console_script,
    log,
    run_wrk,
    seed,
    service_env,
)

# The service's steps, as frames to look for (inclusive time: a stack counts once per step).
# Indentation (two spaces a level) shows what runs inside what.
DATABASE_STEPS = [
    ("engine.begin / connect (pool checkout, pre-ping)", "Engine.begin ("),
    ("Connection.execute", "Connection.execute ("),
    ("  cursor.execute (in the database driver)", "DefaultDialect.do_execute ("),
    ("commit (in the database driver: fsync, WAL)", "DefaultDialect.do_commit ("),
    ("return to pool (rollback / reset)", "_finalize_fairy ("),
]
STEPS = {
    "request": [
        ("gunicorn gthread: handle a request", "handle (gunicorn/workers/gthread.py"),
        ("  Flask wsgi_app (request context, dispatch)", "Flask.wsgi_app (flask/app.py"),
        ("    before_request: request id (uuid4)", "assign_request_id (drift_segment_source"),
        ("    webhooks.receive (the view)", "receive (drift_segment_source/webhooks.py"),
        ("      read_body", "read_body (drift_segment_source"),
        ("      parse_json", "parse_json (drift_segment_source"),
        ("      check_token", "check_token (drift_segment_source"),
        ("      translator.validate (marshmallow)", "Translator.validate (drift_segment"),
        ("      dedupe_key (sha256 of JSON)", "dedupe_key (drift_segment_source"),
        ("      Envelope.without_token (json.dumps)", "Envelope.without_token"),
        ("      Store.accept", "Store.accept (drift_segment_source"),
        ("        statement building (insert().values()...)", "ValuesBase.values ("),
        ("        statement cache key", "HasCacheKey._generate_cache_key ("),
        ("      metrics: labels()", "MetricWrapperBase.labels (prometheus_client"),
        ("      metrics: inc()", "Counter.inc (prometheus_client"),
        ("      log.info (JSON line + redaction)", "Logger.info (logging"),
        ("        redaction", "Redactor.scrub (drift_segment_source"),
        ("        JSON formatter", "JsonLines.format ("),
        ("        stream write", "StreamHandler.emit ("),
        ("      jsonify answer", "jsonify (flask"),
        ("    delivery wake-up Event.set", "Event.set (threading"),
    ],
    "delivery": [
        ("delivery loop (all of it)", "Delivery.run_forever (drift_segment_source"),
        ("  take_lease (SQLite singleton)", "Store.take_lease (drift_segment_source"),
        ("  Store.claim (UPDATE ... RETURNING + json.loads)", "Store.claim (drift_segment"),
        ("    json.loads of payloads", ("Store.claim (", "loads (json/__init__.py")),
        ("  Delivery.prepare (validate + translate + build)", "Delivery.prepare (drift_"),
        ("    translator.validate (marshmallow)", "Translator.validate (drift_segment"),
        ("    translate (drafts, message ids)", "translate (drift_segment_source/translators/b"),
        ("      message_id (sha256 of JSON)", "message_id (drift_segment_source"),
        ("    MessageBuilder.build (segment library)", "MessageBuilder.build (drift_segment"),
        ("  Delivery.send", "Delivery.send (drift_segment_source"),
        ("    batches(): json.dumps per message for its size", "message_size (drift_segment_"),
        ("    HttpTransport.post (request.post)", "HttpTransport.post (drift_segment_source"),
        ("      json.dumps of the batch", ("HttpTransport.post (", "dumps (json/__init__.py")),
        ("      requests Session.post (HTTP round trip)", "Session.post (requests"),
        ("    metrics: DELIVERY_LATENCY.observe", "Histogram.observe (prometheus_client"),
        ("  Delivery.record (mark delivered, counters, log)", "Delivery.record (drift_"),
        ("    Store.mark_delivered", "Store.mark_delivered (drift_segment_source"),
        ("  prune_now_and_then", "Delivery.prune_now_and_then ("),
        ("  wakeup.wait / poll (idle)", "Event.wait (threading"),
    ],
}


def frames_of(line: str) -> tuple[str, list[str], int]:
    """(thread, frames root first, samples) of one collapsed-stack line."""
    stack, _, count = line.rpartition(" ")
    parts = stack.split(";")
    thread = parts[0] if parts and parts[0].startswith("thread") else ""
    return thread, parts[1:] if thread else parts, int(count)


def function(frame: str) -> str:
    """A frame without its line number: ``name (file)``."""
    return re.sub(r":\d+\)$", ")", frame)


def role(thread: str, frames: list[str]) -> str:
    text = ";".join(frames)
    if "Delivery.run_forever" in text:
        return "delivery"
    if "handle (gunicorn/workers/gthread.py" in text:
        return "request"
    if "ControlSocketServer" in text or "ControlSocketServer" in thread:
        return "gunicorn control socket"
    if "_worker (concurrent/futures/thread.py" in text:
        return "request pool, idle"
    if "gunicorn/" in text:
        return "gunicorn main loop (accept, keep-alive poll)"
    # A sample can come back torn (a partial stack): counted, not attributed.
    return "unattributed (torn stack)"


def summarise(paths: list[Path], title: str, top: int = 25) -> str:
    """Per-role split, top self time and the service's steps, from collapsed stacks."""
    stacks: list[tuple[str, list[str], int]] = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if line.strip():
                stacks.append(frames_of(line))
    total = sum(count for _, _, count in stacks)
    if not total:
        return f"### {title}\n\nno samples\n"
    by_role: Counter[str] = Counter()
    for thread, frames, count in stacks:
        by_role[role(thread, frames)] += count
    lines = [f"### {title}", "", f"{total:,} samples from {len(paths)} process(es).", "",
             "| thread role | samples | % |", "|---|---:|---:|"]
    for name, count in by_role.most_common():
        lines.append(f"| {name} | {count:,} | {100 * count / total:.1f} |")
    for focus in ("request", "delivery"):
        chosen = [(frames, count) for thread, frames, count in stacks
                  if role(thread, frames) == focus]
        focus_total = sum(count for _, count in chosen)
        if not focus_total:
            continue
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for frames, count in chosen:
            if frames:
                own[function(frames[-1])] += count
            for name in {function(frame) for frame in frames}:
                inclusive[name] += count
        lines += ["", f"**{focus} threads: {focus_total:,} samples = 100%**", "",
                  "| step | inclusive % |", "|---|---:|"]
        steps = STEPS[focus] + [("database: " + label, needle)
                                for label, needle in DATABASE_STEPS]
        for label, needle in steps:
            needles = (needle,) if isinstance(needle, str) else needle
            hits = sum(count for frames, count in chosen
                       if all(any(part in frame for frame in frames) for part in needles))
            if hits:
                depth = (len(label) - len(label.lstrip(" "))) // 2
                lines.append(f"| {'· ' * depth}{label.strip()} | "
                             f"{100 * hits / focus_total:.1f} |")
        lines += ["", f"Top {top} functions by self time ({focus}):", "",
                  "| self % | inclusive % | function |", "|---:|---:|---|"]
        for name, count in own.most_common(top):
            lines.append(f"| {100 * count / focus_total:.1f} | "
                         f"{100 * inclusive[name] / focus_total:.1f} | `{name}` |")
    return "\n".join(lines) + "\n"


def modes() -> list[str]:
    """The py-spy modes to record, from BENCH_PROFILE_MODES."""
    return (os.environ.get("BENCH_PROFILE_MODES") or "wall,gil").split(",")


def record(pids: list[int], seconds: int, mode: str, folder: Path, prefix: str) -> list[Path]:
    """py-spy record every pid at once for ``seconds``; the raw output files."""
    rate = os.environ.get("BENCH_PROFILE_RATE", "100")
    flags = {"wall": ["--idle"], "gil": ["--gil"], "cpu": []}[mode]
    outputs, running = [], []
    for pid in pids:
        output = folder / f"{prefix}-{mode}-{pid}.txt"
        argv = [console_script("py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-r",
                rate, "--threads", "-f", "raw", "-o", str(output), *flags]
        running.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True))
        outputs.append(output)
    for process in running:
        try:
            _, errors = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise BenchFailure("py-spy did not finish") from None
        if process.returncode:
            raise BenchFailure(f"py-spy failed: {errors[-1000:]}")
    return outputs


def profile_ingest(settings: Settings, work: Path, out: Path, seconds: int,
                   postgres: Postgres | None) -> str:
    templates = workload.interleaved(workload.load_templates())
    templates_file = work / "templates.txt"
    templates_file.write_text("\n".join(t.text for t in templates) + "\n", encoding="utf-8")
    ingest = Ingest(settings, work, templates_file, postgres)
    fake = FakeSegmentProcess(work / "fake", "fake-segment")
    database = "postgres" if postgres else "sqlite"
    folder = work / "ingest"
    folder.mkdir()
    env = dict(item.split("=", 1) for item in os.environ.get("BENCH_PROFILE_ENV", "").split()
               if "=" in item)
    process, _ = ingest.start(Target(f"service, {database}", "service", database, env), folder,
                              fake)
    sections = []
    try:
        url = ingest.url + "/webhooks/drift"
        run_wrk(url, settings, 3, templates_file, ingest.next_run_id(), folder / "warm.txt")
        workers = children(process.pid)
        for mode in modes():
            load = subprocess.Popen(
                ["wrk", f"-t{settings.wrk_threads}", f"-c{settings.connections}",
                 f"-d{seconds + 4}s", "--timeout", "10s", "-s", str(bench.HERE / "webhooks.lua"),
                 url, "--", str(templates_file), str(ingest.next_run_id())],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2)
            files = record(workers, seconds, mode, out, f"ingest-{database}")
            text, _ = load.communicate(timeout=seconds + 60)
            rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
            sections.append(summarise(files, f"Ingest, {database}"
                                      + "".join(f", {k}={v}" for k, v in env.items())
                                      + f", {mode} "
                                      f"({rate.group(1) if rate else '?'} req/s under py-spy)"))
    finally:
        process.stop()
        fake.stop()
    return "\n".join(sections)


def profile_delivery(work: Path, out: Path, seconds: int, postgres: Postgres | None) -> str:
    count = int(os.environ.get("BENCH_PROFILE_N") or 250_000)
    templates = workload.interleaved(workload.load_templates())
    database = "postgres" if postgres else "sqlite"
    url = (postgres.new_database("bench_profile") if postgres
           else f"sqlite:///{work / 'profile.sqlite3'}")
    seed(url, count, templates, first_id=3 * 10**12)
    fake = FakeSegmentProcess(work / "delivery-fake", "fake-segment")
    env = service_env(dict(os.environ), DATABASE_URL=url,
                      DRIFT_VERIFICATION_TOKEN=bench.TOKEN, SEGMENT_WRITE_KEY=bench.WRITE_KEY,
                      SEGMENT_HOST=fake.url, DELIVERY_IN_WEB="false")
    worker = Process("worker", [console_script("drift-segment-source"), "worker"], env,
                     work / "worker.log", cwd=work)
    sections = []
    try:
        deadline = time.monotonic() + 60
        while not fake.stats()["batches"]:
            if time.monotonic() > deadline or not worker.alive():
                raise BenchFailure(f"the worker sent nothing:\n{worker.tail()}")
            time.sleep(0.1)
        for mode in modes():
            before = fake.stats()["messages"]
            started = time.monotonic()
            files = record([worker.pid], seconds, mode, out, f"delivery-{database}")
            rate = (fake.stats()["messages"] - before) / (time.monotonic() - started)
            if fake.stats()["messages"] >= count:
                log("the backlog ran out during the profile: raise BENCH_PROFILE_N")
            sections.append(summarise(files, f"Delivery worker, {database}, {mode} "
                                      f"({rate:,.0f} events/s under py-spy)"))
    finally:
        worker.stop()
        fake.stop()
    return "\n".join(sections)


def main() -> int:
    what = set(sys.argv[1:]) or {"ingest", "delivery"}
    settings = Settings.from_environment()
    seconds = int(os.environ.get("BENCH_PROFILE_SECONDS") or 20)
    if shutil.which("py-spy") is None and not (bench.BIN / "py-spy").exists():
        log("py-spy is not installed: pip install py-spy")
        return 2
    stamp = datetime.now(UTC)
    out = settings.results / "profiles" / f"{stamp:%Y-%m-%d-%H%M}"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dss-profile-"))
    postgres = None
    sections = [f"# py-spy profiles, {stamp:%Y-%m-%d %H:%M} UTC, code {bench.code_version()}",
                ""]
    try:
        if os.environ.get("BENCH_PROFILE_DB") == "postgres":
            bin_dir = bench.postgres_binaries()
            if bin_dir is None:
                raise BenchFailure("no PostgreSQL binaries")
            postgres = Postgres(bin_dir)
        if "ingest" in what:
            sections.append(profile_ingest(settings, work, out, seconds, postgres))
        if "delivery" in what:
            sections.append(profile_delivery(work, out, seconds, postgres))
    except BenchFailure as error:
        log(str(error))
        return 1
    finally:
        bench.stop_everything()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(sections)
    (out / "summary.md").write_text(text)
    print(text)
    log(f"profiles and summary: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
