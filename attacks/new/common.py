"""Shared in-process helpers for the attacks in attacks/new/ (imports attacks/harness.py).

Every script builds the app from the checkout given by --checkout (default: this repo) with
create_app(settings) on a temporary SQLite file unless told otherwise, posts through Flask's
test client, and runs delivery rounds in-process against harness.FakeSegment / FakeDrift.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402
from harness import ORG, TOKEN, webhook  # noqa: E402,F401

DAY = 86400.0


import logging  # noqa: E402

logging.getLogger("segment").setLevel(logging.CRITICAL)


def arguments(doc: str | None, extra: Callable[[argparse.ArgumentParser], object] | None = None
              ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", default=str(HERE.parent.parent))
    parser.add_argument("--database-url", default=None)
    if extra:
        extra(parser)
    args = parser.parse_args()
    args.checkout = str(Path(args.checkout).resolve())
    sys.path.insert(0, args.checkout)
    import drift_segment_source
    if not drift_segment_source.__file__.startswith(args.checkout + os.sep):
        raise SystemExit(f"imported {drift_segment_source.__file__}, not {args.checkout}")
    return args


def sqlite_url(prefix: str) -> str:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    return f"sqlite:///{workdir / 'store.sqlite3'}"


class Clock:
    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now


def base_settings(database_url: str, segment_url: str, drift_url: str, **extra: Any
                  ) -> dict[str, Any]:
    return {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
            "SEGMENT_WRITE_KEY": harness.WRITE_KEY, "SEGMENT_HOST": segment_url,
            "DRIFT_API_URL": drift_url, "DRIFT_ACCESS_TOKEN": harness.DRIFT_TOKEN,
            "DELIVERY_BACKOFF_SECONDS": 0.01, "DELIVERY_BACKOFF_MAX_SECONDS": 0.05,
            "LOG_LEVEL": "CRITICAL", **extra}


class InProcess:
    """An app, its test client and one delivery loop."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from drift_segment_source import create_app
        from drift_segment_source.app import make_delivery
        self.app = create_app(settings)
        self.store = self.app.extensions["store"]
        self.store.migrate()
        self.client = self.app.test_client()
        self.delivery = make_delivery(self.app)
        self.answers: list[str] = []

    def post(self, body: Any, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = self.client.post("/webhooks/drift", data=data,
                                    content_type="application/json",
                                    headers={"X-Verification-Token": token})
        answer = response.get_json(silent=True) or {}
        self.answers.append(f"{response.status_code} {answer.get('status') or answer.get('error')}")
        return response.status_code, answer

    def deliver(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            if self.delivery.run_round() == 0:
                break


def save_write_key(directory: Any, org_id: int, write_key: str, segment_url: str) -> None:
    """Give an app-mode org its write key, delivering to `segment_url`.

    Since f9b14d9 an org stores its Segment region and delivery sends to the host configured
    for it (region "us" -> SEGMENT_HOST, which base_settings points at `segment_url`); before,
    save_write_key took the host itself.
    """
    from drift_segment_source.app_mode import orgs
    if hasattr(orgs, "REGION_HOSTS"):
        directory.save_write_key(org_id, write_key, "us")
    else:
        directory.save_write_key(org_id, write_key, segment_url)


def rows(database_url: str) -> list[dict[str, Any]]:
    return harness.Database(database_url).rows()


def finish(report: dict[str, Any]) -> None:
    harness.finish(report)


class TrickleServer:
    """HTTP on 127.0.0.1 whose chosen answers arrive one byte every `interval` seconds.

    `plan(method, path, body) -> (status, body_bytes, trickle_seconds)`; trickle_seconds 0
    answers at once. Every request is recorded as (time received, method, path, body).
    """

    def __init__(self, plan: Callable[[str, str, bytes], tuple[int, bytes, float]],
                 interval: float = 0.5) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler
        self.plan = plan
        self.interval = interval
        self.requests: list[tuple[float, str, str, bytes]] = []
        self.finished: list[tuple[float, str, int]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append((time.time(), self.command, self.path, body))
                planned = fake.plan(self.command, self.path, body)
                status, payload, trickle = planned[:3]
                extra_headers = planned[3] if len(planned) > 3 else b""  # raw header lines
                if trickle > 0:  # long enough to last `trickle` seconds (JSON allows spaces)
                    payload += b" " * int(trickle / fake.interval + 1)
                head = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n").encode()
                head += extra_headers + b"\r\n" + payload
                try:
                    if trickle <= 0:
                        self.wfile.write(head)
                    else:
                        # Spread the answer over `trickle` seconds, one byte at a time,
                        # never pausing longer than `interval` (under any read timeout).
                        deadline = time.monotonic() + trickle
                        position = 0
                        while position < len(head) - 1 and time.monotonic() < deadline:
                            self.wfile.write(head[position:position + 1])
                            self.wfile.flush()
                            position += 1
                            time.sleep(fake.interval)
                        self.wfile.write(head[position:])
                    self.wfile.flush()
                    with fake._lock:
                        fake.finished.append((time.time(), self.path, status))
                except OSError:
                    pass

            do_GET = _any
            do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = harness._QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
