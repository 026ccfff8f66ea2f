"""Shared pieces of the attack scripts: loopback fakes, the service as a child process,
concurrent posting, reading the store, and the one-JSON-object report.

Standalone on purpose: nothing here imports the service or its tests, so the same script runs
against any checkout (``--checkout PATH``). The service is started from that checkout with
``PYTHONPATH=<checkout>`` and a working directory outside every checkout, so the checkout's
package is the one imported (checked before start). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

TOKEN = "attack-verification-token"
WRITE_KEY = "attack-write-key-0123456789"
DRIFT_TOKEN = "attack-drift-access-token"
ORG = 5000883


# -- command line -----------------------------------------------------------------------------


def arguments(description: str | None,
              extra: Callable[[argparse.ArgumentParser], object] | None = None
              ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkout", required=True,
                        help="the repository checkout whose drift_segment_source to attack")
    parser.add_argument("--database-url", default=None,
                        help="an EMPTY database to use instead of a temporary SQLite file "
                             "(postgresql://...)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (service log, database) and say where")
    if extra:
        extra(parser)
    args = parser.parse_args()
    args.checkout = str(Path(args.checkout).resolve())
    if not (Path(args.checkout) / "drift_segment_source" / "__init__.py").is_file():
        parser.error(f"{args.checkout} has no drift_segment_source package")
    return args


# -- loopback fakes ---------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (service killed) is expected


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class FakeSegment:
    """Segment's Tracking API on 127.0.0.1: records every message of every 2xx batch.

    As strict as the real one where it matters here: the body must be standard JSON (no
    NaN/Infinity), every message needs a non-empty userId or anonymousId, a message over
    32 KB or a batch over 500 KB is refused (400/413).
    """

    MAX_MESSAGE = 32 * 1024
    MAX_BATCH = 500 * 1024

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []  # (time, message)
        self.refused: list[tuple[float, int, str]] = []
        self.write_keys: set[str] = set()
        self.fail_next = 0  # answer the next N batches 503 (an outage blip)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length)
                status, answer = fake._answer(self.path, self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        now = time.time()
        if path.rstrip("/") != "/v1/batch":
            return 404, {"code": "not_found", "message": path}
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.refused.append((now, 503, "told to fail"))
                return 503, {"code": "unavailable", "message": "told to fail"}
        if len(body) > self.MAX_BATCH:
            with self._lock:
                self.refused.append((now, 413, "batch too large"))
            return 413, {"code": "too_large", "message": "batch over 500 KB"}
        try:
            document = json.loads(body, parse_constant=_no_constants)
        except (ValueError, RecursionError) as error:
            with self._lock:
                self.refused.append((now, 400, f"invalid JSON: {error}"[:200]))
            return 400, {"code": "invalid_json", "message": "body is not valid JSON"}
        batch = document.get("batch") if isinstance(document, dict) else None
        if not isinstance(batch, list):
            return 400, {"code": "invalid_request", "message": "no batch"}
        for message in batch:
            ident = message.get("userId") or message.get("anonymousId")
            if not isinstance(ident, str) or not ident:
                with self._lock:
                    self.refused.append((now, 400, "message without userId/anonymousId"))
                return 400, {"code": "invalid_request", "message": "missing id"}
            if len(json.dumps(message).encode()) > self.MAX_MESSAGE:
                with self._lock:
                    self.refused.append((now, 400, "message over 32 KB"))
                return 400, {"code": "invalid_request", "message": "message too large"}
        scheme, _, encoded = headers.get("Authorization", "").partition(" ")
        with self._lock:
            if scheme == "Basic":
                self.write_keys.add(base64.b64decode(encoded).decode().rstrip(":"))
            self.received.extend((now, message) for message in batch)
        return 200, {"success": True}

    def messages(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.received)


class FakeDrift:
    """Drift's ``GET /conversations/{id}`` on 127.0.0.1 (any bearer token is accepted).

    ``conversations[id] = (data, delay_seconds)``; ``raw[id] = (status, body_bytes, headers)``
    answers exactly that instead (garbage answers). Unknown ids get 404.
    ``lists`` / ``meetings`` feed ``/conversations/list`` and ``/users/meetings/org`` (backfill).
    """

    def __init__(self) -> None:
        self.conversations: dict[str, tuple[dict[str, Any], float]] = {}
        self.raw: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.listed: list[dict[str, Any]] = []
        self.meetings: list[dict[str, Any]] = []
        self.calls: list[tuple[float, str]] = []
        self.in_flight = 0  # slow answers being waited for right now
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                status, body, extra = fake._answer(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, raw_path: str) -> tuple[int, bytes, dict[str, str]]:
        path = raw_path.split("?", 1)[0]
        with self._lock:
            self.calls.append((time.time(), path))
        if path == "/conversations/list":
            return 200, json.dumps({"data": self.listed, "pagination": {}}).encode(), {}
        if path == "/users/meetings/org":
            return 200, json.dumps({"data": self.meetings}).encode(), {}
        if path.startswith("/conversations/"):
            key = path.rsplit("/", 1)[1]
            if key in self.raw:
                status, body, headers = self.raw[key]
                return status, body, headers
            if key in self.conversations:
                data, delay = self.conversations[key]
                if delay:
                    with self._lock:
                        self.in_flight += 1
                    try:
                        time.sleep(delay)
                    finally:
                        with self._lock:
                            self.in_flight -= 1
                return 200, json.dumps({"data": data}).encode(), {}
        return 404, b'{"error":"not_found"}', {}

    def lookups(self) -> list[tuple[float, str]]:
        with self._lock:
            return [call for call in self.calls if call[1].startswith("/conversations/")
                    and call[1] != "/conversations/list"]


# -- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """``drift-segment-source serve`` from a checkout, in its own process group."""

    def __init__(self, checkout: str, workdir: Path, env: dict[str, str]) -> None:
        self.checkout = checkout
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        inherited = {key: value for key, value in os.environ.items()
                     if not key.startswith(("DRIFT_", "SEGMENT_", "DELIVERY_", "DATABASE_", "WEB_",
                                            "STORE_", "RETENTION_", "MAX_BODY", "ADMIN_",
                                            "IDENTITY_", "PUBLIC_URL", "SECRET_KEY"))
                     and key not in ("PYTHONPATH", "PORT", "LOG_LEVEL",
                                     "PROMETHEUS_MULTIPROC_DIR")}
        self.env = {**inherited, "PYTHONPATH": checkout, "PORT": str(self.port),
                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    "DRIFT_VERIFICATION_TOKEN": TOKEN, "LOG_LEVEL": "INFO", **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_seconds: float | None = None

    def check_import(self) -> str:
        """The file the service will import the package from; must be in the checkout."""
        found = subprocess.run(
            [sys.executable, "-c", "import drift_segment_source as p; print(p.__file__)"],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=60,
        ).stdout.strip()
        if not found.startswith(self.checkout + os.sep):
            raise RuntimeError(f"the service would import {found!r}, not {self.checkout}")
        return found

    def start(self, timeout: float = 60) -> None:
        self.check_import()
        log = open(self.log_path, "ab")  # noqa: SIM115 (inherited by the child, closed below)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from drift_segment_source.cli import main; main()", "serve"],
            env=self.env, cwd=self.workdir, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("service exited early:\n" + self.log_tail())
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError("service not ready:\n" + self.log_tail())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def terminate(self, timeout: float = 45) -> float | None:
        """SIGTERM the gunicorn master; seconds until the whole group exited (None: killed)."""
        if self.process is None or self.process.poll() is not None:
            return None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        # Workers are in the same group; wait for them too (bounded).
        while time.monotonic() - started < timeout and _group_alive(self.process.pid):
            time.sleep(0.1)
        self.exit_seconds = round(time.monotonic() - started, 2)
        return self.exit_seconds

    def kill(self) -> None:
        """SIGKILL this service's process group (only ours: the group of the PID we started)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- posting ----------------------------------------------------------------------------------


@dataclass
class Answer:
    index: int
    status: int | None
    label: str  # "200 accepted", "200 duplicate", "500 internal_error", "ConnectionError"...
    body: Any
    at: float


def encode(body: Any) -> bytes:
    """A webhook body as bytes; str bodies are sent as they are (raw JSON text)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    # ensure_ascii: a lone surrogate is written as the JSON escape "\ud83d" (valid JSON text).
    return json.dumps(body).encode("ascii")


def post_one(url: str, body: Any, session: requests.Session | None = None,
             timeout: float = 30, index: int = 0) -> Answer:
    poster = session or requests
    try:
        response = poster.post(url + "/webhooks/drift", data=encode(body), timeout=timeout,
                               headers={"Content-Type": "application/json",
                                        "X-Verification-Token": TOKEN})
    except requests.RequestException as error:
        return Answer(index, None, type(error).__name__, None, time.time())
    try:
        answer = response.json()
    except ValueError:
        answer = response.text[:200]
    what = "?"
    if isinstance(answer, dict):
        what = str(answer.get("status") or answer.get("error") or "?")
    return Answer(index, response.status_code, f"{response.status_code} {what}", answer,
                  time.time())


def post_concurrently(url: str, bodies: list[Any], connections: int) -> list[Answer]:
    """POST every body over ``connections`` keep-alive connections at once, in order."""
    local = threading.local()

    def send(item: tuple[int, Any]) -> Answer:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return post_one(url, item[1], local.session, index=item[0])

    with ThreadPoolExecutor(connections) as pool:
        answers = list(pool.map(send, enumerate(bodies)))
    return answers


def webhook(event_type: str, data: dict[str, Any], org_id: int = ORG) -> dict[str, Any]:
    return {"type": event_type, "orgId": org_id, "token": TOKEN, "data": data}


# -- the store --------------------------------------------------------------------------------


class Database:
    """Read-only look at the service's ``webhooks`` table (SQLite file or SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self) -> list[dict[str, Any]]:
        """Every stored webhook row (columns that exist in this checkout's schema)."""
        try:
            if self.url.startswith("sqlite:///"):
                path = self.url[len("sqlite:///"):]
                lite = sqlite3.connect(path, timeout=30)
                lite.row_factory = sqlite3.Row
                try:
                    return [dict(row) for row in lite.execute("SELECT * FROM webhooks")]
                finally:
                    lite.close()
            from sqlalchemy import create_engine, text
            url = self.url.replace("postgres://", "postgresql://", 1).replace(
                "postgresql://", "postgresql+psycopg://", 1)
            engine = create_engine(url)
            try:
                with engine.connect() as connection:
                    return [dict(row._mapping)
                            for row in connection.execute(text("SELECT * FROM webhooks"))]
            finally:
                engine.dispose()
        except Exception as error:  # noqa: BLE001 (the report says what went wrong)
            return [{"_error": f"{type(error).__name__}: {error}"[:300]}]


def states(rows: list[dict[str, Any]]) -> dict[str, int]:
    counted = Counter(str(row.get("state")) for row in rows if "_error" not in row)
    return dict(sorted(counted.items()))


def marker(name: str) -> str:
    """A unique unused field value; searchable in stored payloads as ``<<name>>``."""
    return f"<<{name}>>"


def row_for(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    needle = marker(name)
    for row in rows:
        payload = row.get("payload")
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "replace")
        if isinstance(payload, str) and needle in payload:
            return row
    return None


# -- the report -------------------------------------------------------------------------------


def answered(answers: Iterable[Answer]) -> dict[str, int]:
    return dict(sorted(Counter(answer.label for answer in answers).items()))


def delivered_ids(segment: FakeSegment) -> dict[str, list[dict[str, Any]]]:
    """Messages at the fake Segment by anonymousId."""
    found: dict[str, list[dict[str, Any]]] = {}
    for _, message in segment.messages():
        found.setdefault(str(message.get("anonymousId")), []).append(message)
    return found


def message_id_counts(segment: FakeSegment) -> Counter[str]:
    return Counter(str(message.get("messageId")) for _, message in segment.messages())


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@dataclass
class Run:
    """Temp folder, fakes and service of one attack; everything is stopped in ``close``."""

    args: argparse.Namespace
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(init=False)
    database_url: str = field(init=False)
    segment: FakeSegment = field(init=False)
    drift: FakeDrift = field(init=False)
    service: Service = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="dss-attack-"))
        self.database_url = self.args.database_url or f"sqlite:///{self.workdir / 'store.sqlite3'}"
        self.segment = FakeSegment()
        self.drift = FakeDrift()
        env = {
            "DATABASE_URL": self.database_url,
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_HOST": self.segment.url,
            "DRIFT_API_URL": self.drift.url,
            "DRIFT_ACCESS_TOKEN": DRIFT_TOKEN,
            **self.env,
        }
        self.service = Service(self.args.checkout, self.workdir, env)
        self.db = Database(self.database_url)

    def close(self) -> None:
        self.service.kill()
        self.segment.close()
        self.drift.close()
        if self.args.keep:
            print(f"kept: {self.workdir}", file=sys.stderr)
        else:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)


def log_mentions(text: str, needles: Iterable[str]) -> list[str]:
    """Which of ``needles`` occur in the service log (a body must never be logged)."""
    return [needle for needle in needles if needle and needle in text]


def error_lines(text: str, limit: int = 6) -> list[str]:
    """Distinct last lines of the tracebacks in the service log (e.g. 'AssertionError: ...'),
    with the log message they came with."""
    found: list[str] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        trace = entry.get("error") or entry.get("exc_info") or ""
        if not isinstance(trace, str) or "Traceback" not in trace:
            continue
        last = trace.strip().splitlines()[-1][:160]
        summary = f"{entry.get('message')}: {last}"
        if summary not in found:
            found.append(summary)
        if len(found) >= limit:
            break
    return found


def finish(report: dict[str, Any]) -> None:
    """Print the one JSON object; exit 1 when the bug shows."""
    print(json.dumps(report, sort_keys=True, default=str))
    sys.stdout.flush()
    sys.exit(1 if report.get("bug") else 0)


@dataclass
class Sent:
    """One posted webhook: its marker name, the contact id it must reach Segment under."""

    name: str
    contact: str
    body: Any
    group: str = "good"
    answer: Answer | None = None


def tally(sent: list[Sent], rows: list[dict[str, Any]], segment: FakeSegment) -> dict[str, Any]:
    """The common figures: posted, answered, stored, delivered, lost, duplicate lies."""
    by_contact = delivered_ids(segment)
    ids = message_id_counts(segment)
    accepted_contacts = {item.contact for item in sent
                         if item.answer and item.answer.label == "200 accepted"}
    of_accepted = {message.get("messageId") for contact in accepted_contacts
                   for message in by_contact.get(contact, [])}
    lost, duplicate_lies, five_xx, unrecorded = [], [], [], []
    for item in sent:
        label = item.answer.label if item.answer else "not sent"
        row = row_for(rows, item.name)
        stored = row is not None
        delivered = item.contact in by_contact
        if delivered and row is not None and row.get("state") != "delivered":
            unrecorded.append(item.name)
        if label in ("200 accepted", "200 duplicate") and not delivered:
            lost.append(item.name)
        if label == "200 duplicate" and not stored:
            duplicate_lies.append(item.name)
        if item.answer and item.answer.status is not None and item.answer.status >= 500:
            five_xx.append(item.name)
    answered_by_group: dict[str, dict[str, int]] = {}
    for item in sent:
        label = item.answer.label if item.answer else "not sent"
        group = answered_by_group.setdefault(item.group, {})
        group[label] = group.get(label, 0) + 1
    return {
        "posted": len(sent),
        "answered": answered(item.answer for item in sent if item.answer),
        "answered_by_group": {name: dict(sorted(counts.items()))
                              for name, counts in sorted(answered_by_group.items())},
        "stored": states(rows),
        "stored_rows": len([row for row in rows if "_error" not in row]),
        "delivered": {"distinct_message_ids": len(ids),
                      "of_accepted": len(of_accepted),
                      "messages": sum(ids.values())},
        "duplicates_sent": sum(1 for count in ids.values() if count > 1),
        "lost": len(lost),
        "lost_examples": lost[:5],
        "duplicate_but_not_stored": len(duplicate_lies),
        "sent_but_row_not_delivered": len(unrecorded),
        "five_xx": len(five_xx),
        "db_error": next((row["_error"] for row in rows if "_error" in row), None),
    }


def guard(main: Callable[[], None]) -> None:
    """Run a script's main; a broken run (service would not start...) exits 2, not 1."""
    try:
        main()
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(json.dumps({"error": f"{type(error).__name__}: {error}"[:2000], "bug": None}))
        sys.exit(2)
