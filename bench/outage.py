"""How fast a backlog resumes after a Segment outage (docs/reliability.md#circuit-breakers).

Runs the real service (``drift-segment-source serve``, 2 workers, delivery in the web
workers, SQLite) from a checkout, against a loopback fake Segment that answers 503 to
every batch for ``--outage`` seconds while ``--backlog`` distinct webhooks are posted,
then answers 200. Prints one JSON object: seconds from recovery to the first delivered
batch and to the backlog fully drained, failed posts during the outage, the attempts the
rows spent, and whether every webhook arrived exactly once.

    .venv/bin/python bench/outage.py [--checkout PATH] [--backlog 10000] [--outage 60]

Compare checkouts (e.g. one before the circuit breaker) in the same run on the same machine.
Network traffic stays on 127.0.0.1; the service runs in its own process group, stopped by
its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-verification-token"
MESSAGE_ID = re.compile(rb'"messageId":\s*"([^"]+)"')


class FakeSegment:
    """``POST /v1/batch``: 503 while ``down``, else 200; records messageIds and times."""

    def __init__(self) -> None:
        self.down = True
        self.failed_posts = 0
        self.ids: list[bytes] = []
        self.first_ok_at: float | None = None
        self.last_ok_at: float | None = None
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with fake.lock:
                    if fake.down:
                        fake.failed_posts += 1
                        status, answer = 503, b'{"code":"down","message":"outage"}'
                    else:
                        now = time.monotonic()
                        fake.first_ok_at = fake.first_ok_at or now
                        fake.last_ok_at = now
                        fake.ids.extend(MESSAGE_ID.findall(body))
                        status, answer = 200, b'{"success":true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def webhook(number: int) -> bytes:
    return json.dumps({"type": "new_conversation", "orgId": 5000883, "token": TOKEN,
                       "data": {"id": 10_000_000 + number, "contactId": 20_000_000 + number,
                                "createdAt": 1714419312425 + number, "status": "open"}}
                      ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", default=str(ROOT), help="the checkout to run")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds Segment is down")
    parser.add_argument("--limit", type=float, default=900.0,
                        help="give up waiting for the drain after this many seconds")
    args = parser.parse_args()
    segment = FakeSegment()
    folder = Path(tempfile.mkdtemp(prefix="dss-outage-"))
    database = folder / "store.sqlite3"
    port = free_port()
    env = {**{key: value for key, value in os.environ.items()
              if key != "PROMETHEUS_MULTIPROC_DIR"},
           "PYTHONPATH": args.checkout, "PORT": str(port), "DATABASE_URL": f"sqlite:///{database}",
           "DRIFT_VERIFICATION_TOKEN": TOKEN, "SEGMENT_WRITE_KEY": "bench-write-key-0123456789",
           "SEGMENT_HOST": segment.url, "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING"}
    log = open(folder / "service.log", "wb")  # noqa: SIM115 (closed below)
    service = subprocess.Popen(
        [sys.executable, "-c", "from drift_segment_source.cli import main; main()", "serve"],
        env=env, cwd=folder, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or service.poll() is not None:
                raise SystemExit(f"service did not start; see {folder / 'service.log'}")
            time.sleep(0.2)
        outage_started = time.monotonic()
        with requests.Session() as session, ThreadPoolExecutor(16) as pool:
            def post(number: int) -> int:
                return session.post(url + "/webhooks/drift", data=webhook(number), timeout=30,
                                    headers={"Content-Type": "application/json"}).status_code
            statuses = list(pool.map(post, range(args.backlog)))
        posted_seconds = time.monotonic() - outage_started
        time.sleep(max(0.0, args.outage - posted_seconds))
        with segment.lock:
            segment.down = False
            failed_posts = segment.failed_posts
        recovered = time.monotonic()
        while time.monotonic() - recovered < args.limit:
            with segment.lock:
                if len(set(segment.ids)) >= args.backlog:
                    break
            time.sleep(0.2)
        with segment.lock:
            first, last = segment.first_ok_at, segment.last_ok_at
            received = list(segment.ids)
        with sqlite3.connect(database) as connection:
            attempts = connection.execute(
                "SELECT coalesce(sum(attempts), 0), coalesce(max(attempts), 0) "
                "FROM webhooks").fetchone()
        report = {
            "checkout": args.checkout, "backlog": args.backlog, "outage_seconds": args.outage,
            "accepted": statuses.count(200), "posting_seconds": round(posted_seconds, 1),
            "failed_posts_during_outage": failed_posts,
            "recovery_to_first_delivery_seconds":
                None if first is None else round(first - recovered, 2),
            "recovery_to_drained_seconds":
                None if len(set(received)) < args.backlog or last is None
                else round(last - recovered, 2),
            "delivered": len(set(received)), "sent_twice": len(received) - len(set(received)),
            "attempts_spent": {"total": attempts[0], "max_per_row": attempts[1]},
        }
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        log.close()
        segment.server.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
