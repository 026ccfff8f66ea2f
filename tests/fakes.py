"""Loopback fakes of the services the relay talks to: real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietServer(ThreadingHTTPServer):
    """Clients that vanish mid-request (a killed service) are expected, not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class FakeSegment:
    """A Segment Tracking API that records every batch and fails when told to.

    ``fail_next(n, status)`` fails the next n posts; ``fail_always(status)`` until
    ``recover()``; ``refuse(message_id)`` answers 400 to any batch holding that message;
    ``refuse_write_key(key, status)`` answers ``status`` to every post with that key.
    ``checks`` lists the write keys of the empty batches received (write-key checks).
    """

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._fail_remaining = 0
        self._fail_forever = False
        self._fail_status = 503
        self._retry_after: str | None = None
        self._refused: set[str] = set()
        self._refused_keys: dict[str, int] = {}
        self.checks: list[str] = []
        self.delay = 0.0  # seconds to wait before answering a batch (slow Segment)
        self.failure_body: bytes | None = None  # the raw body of failing answers (garbage)
        self.redirect_to: str | None = None  # answer every batch with a 301 to this URL
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if fake.delay:
                    time.sleep(fake.delay)
                status, answer = fake._answer(self.path, self.headers, body)
                payload = json.dumps(answer).encode()
                if status != 200 and fake.failure_body is not None:
                    payload = fake.failure_body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 429 and fake._retry_after:
                    self.send_header("Retry-After", fake._retry_after)
                if status == 301 and fake.redirect_to:
                    self.send_header("Location", fake.redirect_to)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSegment:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            if self.redirect_to and path == "/v1/batch":
                return 301, {"code": "moved", "message": self.redirect_to}
            if path != "/v1/batch":
                return 404, {"code": "not_found", "message": path}
            if self._fail_forever or self._fail_remaining > 0:
                self._fail_remaining = max(0, self._fail_remaining - 1)
                return self._fail_status, {"code": "fake_failure", "message": "told to fail"}
            refused_key = self._refused_keys.get(basic_auth_user(headers.get("Authorization")))
            if refused_key is not None:
                return refused_key, {"code": "invalid_write_key", "message": "told to refuse"}
            document = json.loads(body)
            if not document["batch"]:
                self.checks.append(basic_auth_user(headers.get("Authorization")))
            ids = {message.get("messageId") for message in document["batch"]}
            if ids & self._refused:
                return 400, {"code": "invalid_request", "message": "refused message"}
            self.batches.append(document)
            self.auth.append(headers.get("Authorization", ""))
            return 200, {"success": True}

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        with self._lock:
            self._fail_remaining, self._fail_status = count, status
            self._retry_after = retry_after

    def fail_always(self, status: int = 503) -> None:
        with self._lock:
            self._fail_forever, self._fail_status = True, status

    def recover(self) -> None:
        with self._lock:
            self._fail_forever, self._fail_remaining = False, 0

    def refuse(self, message_id: str) -> None:
        with self._lock:
            self._refused.add(message_id)

    def refuse_write_key(self, write_key: str, status: int = 401) -> None:
        with self._lock:
            self._refused_keys[write_key] = status

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [message for batch in self.batches for message in batch["batch"]]

    def message_id_counts(self) -> Counter[str]:
        return Counter(message["messageId"] for message in self.messages)

    def write_keys(self) -> set[str]:
        keys = set()
        for header in self.auth:
            scheme, _, encoded = header.partition(" ")
            if scheme == "Basic":
                keys.add(base64.b64decode(encoded).decode().rstrip(":"))
        return keys


def basic_auth_user(header: str | None) -> str:
    """The user (Segment: the write key) of a Basic Authorization header, else ""."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme != "Basic":
        return ""
    return base64.b64decode(encoded).decode().partition(":")[0]


class FakeDriftApi:
    """Drift's ``GET /conversations/{id}`` and ``GET /contacts/{id}`` for a self-hosted
    token, on 127.0.0.1.

    ``conversations`` and ``contacts`` hold the answers by id; ``delay`` makes an id answer
    late (seconds); ``garbage`` makes it answer 200 with the given bytes; ``status`` makes
    it answer that status. Unknown ids get 404.
    """

    def __init__(self) -> None:
        self.conversations: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.status: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.garbage: dict[str, bytes] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                kind, _, item_id = self.path.strip("/").partition("/")
                with fake._lock:
                    fake.calls.append(self.path)
                    delay = fake.delay.get(item_id, 0.0)
                    garbage = fake.garbage.get(item_id)
                    table = fake.contacts if kind == "contacts" else fake.conversations
                    found = table.get(item_id)
                    forced = fake.status.get(item_id)
                if delay:
                    time.sleep(delay)
                status, payload = 200, garbage
                if forced is not None:
                    status, payload = forced, b'{"error": "told to fail"}'
                if payload is None:
                    status = 200 if found is not None else 404
                    payload = json.dumps({"data": found} if found is not None
                                         else {"error": "not_found"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDriftApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
