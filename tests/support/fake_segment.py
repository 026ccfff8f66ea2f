"""A loopback fake of Segment's Tracking API (``POST /v1/batch``).

``FakeSegment`` records every batch and can fail, hang, trickle, redirect or refuse on
command; it is as strict as the real API where it matters (standard JSON only, 32 KB per
message, 500 KB per batch, a non-empty ``userId`` or ``anonymousId`` on every message).

Run as a program (``python -m tests.support.fake_segment PORT_FILE IDS_FILE``) it is the
benchmark's counting fake instead: asyncio in its own process, answers 200 at once, appends
the messageIds to IDS_FILE and keeps only counters (``GET /stats``), so draining a million
messages costs it little.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from .loopback import padded, serve, write_slowly

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
TRICKLE_INTERVAL = 0.5


def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status, as a real server sends it."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass
class Post:
    """One POST as the fake saw it: when it came and ended, what it held, how it ended."""

    started: float
    message_ids: list[str]
    status: int = 0
    ended: float | None = None
    completed: bool = True  # False: the client went away before the whole answer


@dataclass
class _Plan:
    fail_remaining: int = 0
    fail_forever: bool = False
    fail_status: int = 503
    retry_after: str | None = None
    trickles: list[float] = field(default_factory=list)
    refused_ids: set[str] = field(default_factory=set)
    refused_markers: list[bytes] = field(default_factory=list)
    refused_keys: dict[str, int] = field(default_factory=dict)


def basic_auth_user(header: str | None) -> str:
    """The user (Segment: the write key) of a Basic Authorization header, else ""."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme != "Basic":
        return ""
    return base64.b64decode(encoded).decode().partition(":")[0]


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class FakeSegment:
    """Segment's Tracking API on 127.0.0.1, recording every batch it accepts.

    ``fail_next(n, status, retry_after)`` fails the next n posts; ``fail_always(status)``
    until ``recover()``; ``refuse(message_id)`` / ``refuse_containing(marker)`` answer 400 to
    a batch holding it; ``refuse_write_key(key, status)``; ``trickle_next(n, seconds)`` sends
    the next n answers one byte every half second; ``delay`` waits before every answer;
    ``redirect_to`` answers every post with ``redirect_status`` and that Location;
    ``get_status`` is the answer to a GET (what a redirected POST may become).
    """

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.received: list[tuple[float, dict[str, Any]]] = []  # (time, message) accepted
        self.refusals: list[tuple[float, int, str]] = []  # (time, status, why)
        self.posts: list[Post] = []
        self.gets: list[str] = []
        self.checks: list[str] = []  # write keys of the empty batches (write-key checks)
        self.requests = 0
        self.delay = 0.0
        self.failure_body: bytes | None = None  # raw body of failing answers (garbage)
        self.redirect_to: str | None = None
        self.redirect_status = 301
        self.get_status = 405
        self._plan = _Plan()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                fake._post(self, body)

            def do_GET(self) -> None:  # noqa: N802
                with fake._lock:
                    fake.gets.append(self.path)
                fake._reply(self, fake.get_status, b"<html>not here</html>", {})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server, self.url, self._thread = serve(Handler)

    def __enter__(self) -> FakeSegment:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests call --------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, retry_after: str | None = None) -> None:
        """Fail the next ``count`` posts with ``status``."""
        with self._lock:
            self._plan.fail_remaining, self._plan.fail_status = count, status
            self._plan.retry_after = retry_after

    def fail_always(self, status: int = 503) -> None:
        """Fail every post until :meth:`recover` (an outage)."""
        with self._lock:
            self._plan.fail_forever, self._plan.fail_status = True, status

    def recover(self) -> None:
        """The outage is over."""
        with self._lock:
            self._plan.fail_forever, self._plan.fail_remaining = False, 0

    def refuse(self, message_id: str) -> None:
        """Answer 400 to any batch holding this messageId."""
        with self._lock:
            self._plan.refused_ids.add(message_id)

    def refuse_containing(self, marker: str) -> None:
        """Answer 400 to any batch whose body holds ``marker`` (a message Segment refuses)."""
        with self._lock:
            self._plan.refused_markers.append(marker.encode())

    def refuse_write_key(self, write_key: str, status: int = 401) -> None:
        """Answer ``status`` to every post made with this write key."""
        with self._lock:
            self._plan.refused_keys[write_key] = status

    def trickle_next(self, count: int, seconds: float) -> None:
        """Trickle the next ``count`` answers over ``seconds``, one byte every half second."""
        self.trickle_each(*[seconds] * count)

    def trickle_each(self, *seconds: float) -> None:
        """Trickle the next answers, one over each of ``seconds``."""
        with self._lock:
            self._plan.trickles = list(seconds)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message of every accepted batch, in order."""
        with self._lock:
            return [message for _, message in self.received]

    def message_id_counts(self) -> Counter[str]:
        """How many times each messageId was accepted."""
        return Counter(message["messageId"] for message in self.messages)

    def by_anonymous_id(self) -> dict[str, list[dict[str, Any]]]:
        """Accepted messages by anonymousId (a Drift contact id)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for message in self.messages:
            found.setdefault(str(message.get("anonymousId")), []).append(message)
        return found

    def first_seen(self) -> dict[str, float]:
        """When each anonymousId first reached the fake (epoch seconds)."""
        with self._lock:
            seen: dict[str, float] = {}
            for at, message in self.received:
                seen.setdefault(str(message.get("anonymousId")), at)
            return seen

    def write_keys(self) -> set[str]:
        """The write keys of the accepted batches."""
        with self._lock:
            return {basic_auth_user(header) for header in self.auth} - {""}

    # -- the HTTP side ----------------------------------------------------------------------

    def _post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        post = Post(time.time(), [m.decode() for m in re.findall(rb'"messageId":\s*"([^"]*)"',
                                                                  body)])
        with self._lock:
            self.posts.append(post)
        if self.delay:
            time.sleep(self.delay)
        headers: dict[str, str] = {}
        with self._lock:
            status, answer = self._answer(request.path, request.headers, body, post.started)
            trickle = 0.0
            if self._plan.trickles and status == 200:
                trickle = self._plan.trickles.pop(0)
            if status == 429 and self._plan.retry_after:
                headers["Retry-After"] = self._plan.retry_after
            if status in (301, 302, 303, 307, 308) and self.redirect_to:
                headers["Location"] = self.redirect_to + request.path
        payload = json.dumps(answer).encode()
        if status >= 300 and self.failure_body is not None:
            payload = self.failure_body
        post.status = status
        post.completed = self._reply(request, status, payload, headers, trickle)
        post.ended = time.time()

    def _reply(self, request: BaseHTTPRequestHandler, status: int, payload: bytes,
               headers: dict[str, str], trickle: float = 0.0) -> bool:
        if trickle:
            payload = padded(payload, trickle, TRICKLE_INTERVAL)
        head = [f"HTTP/1.1 {status} {reason(status)}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        if trickle:
            return write_slowly(request.wfile, data, trickle, TRICKLE_INTERVAL)
        try:
            request.wfile.write(data)
            request.wfile.flush()
        except OSError:
            return False
        return True

    def _answer(self, path: str, headers: Any, body: bytes,
                now: float) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        plan = self._plan
        if self.redirect_to:
            return self.redirect_status, {"code": "moved", "message": self.redirect_to}
        if path.rstrip("/") != "/v1/batch":
            return 404, {"code": "not_found", "message": path}
        if plan.fail_forever or plan.fail_remaining > 0:
            plan.fail_remaining = max(0, plan.fail_remaining - 1)
            return self._refused(now, plan.fail_status, "told to fail")
        key = basic_auth_user(headers.get("Authorization"))
        if key in plan.refused_keys:
            return self._refused(now, plan.refused_keys[key], "write key refused")
        if len(body) > MAX_BATCH_BYTES:
            return self._refused(now, 413, "batch over 500 KB")
        try:
            document = json.loads(body, parse_constant=_not_json)
        except (ValueError, RecursionError):
            return self._refused(now, 400, "not standard JSON")
        batch = document.get("batch") if isinstance(document, dict) else None
        if not isinstance(batch, list):
            return self._refused(now, 400, "no batch")
        if not batch:
            self.checks.append(key)
        for message in batch:
            ident = message.get("userId") or message.get("anonymousId")
            if not isinstance(ident, str) or not ident:
                return self._refused(now, 400, "message without userId or anonymousId")
            if len(json.dumps(message).encode()) > MAX_MESSAGE_BYTES:
                return self._refused(now, 400, "message over 32 KB")
            if message.get("messageId") in plan.refused_ids:
                return self._refused(now, 400, "refused message")
        if any(marker in body for marker in plan.refused_markers):
            return self._refused(now, 400, "refused message")
        self.batches.append(document)
        self.auth.append(headers.get("Authorization", ""))
        self.received.extend((now, message) for message in batch)
        return 200, {"success": True}

    def _refused(self, now: float, status: int, why: str) -> tuple[int, dict[str, Any]]:
        self.refusals.append((now, status, why))
        return status, {"code": "refused", "message": why}


# -- the benchmark's counting fake (a program of its own) ------------------------------------

MESSAGE_ID = re.compile(rb'"messageId":\s*"([^"]+)"')


class Counters:
    """What the counting fake keeps: numbers, and the messageIds in a file."""

    def __init__(self, ids_file: str) -> None:
        self.messages = 0
        self.batches = 0
        self.batch_messages: list[int] = []
        self.batch_bytes: list[int] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.ids = open(ids_file, "wb", buffering=1 << 20)  # noqa: SIM115 (lives with the server)

    def record(self, body: bytes) -> None:
        """Count one batch and write its messageIds."""
        ids = MESSAGE_ID.findall(body)
        now = time.time()
        self.first_at = self.first_at or now
        self.last_at = now
        self.messages += len(ids)
        self.batches += 1
        self.batch_messages.append(len(ids))
        self.batch_bytes.append(len(body))
        self.ids.write(b"\n".join(ids) + b"\n")

    def stats(self) -> bytes:
        """The counters as JSON (flushes the ids file first)."""
        self.ids.flush()
        return json.dumps({
            "messages": self.messages, "batches": self.batches, "first_at": self.first_at,
            "last_at": self.last_at, "batch_messages": self.batch_messages,
            "batch_bytes": self.batch_bytes,
        }).encode()


async def counting_server(port_file: str, ids_file: str) -> None:
    """Serve the counting fake until SIGTERM; its port goes to ``port_file``."""
    counters = Counters(ids_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_block = head.partition(b"\r\n")
                length = 0
                for line in header_block.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                method, path = request_line.split(b" ")[:2]
                if method == b"POST" and path == b"/v1/batch":
                    counters.record(body)
                    answer, status = b'{"success": true}', b"200 OK"
                elif method == b"GET" and path == b"/stats":
                    answer, status = counters.stats(), b"200 OK"
                else:
                    answer, status = b'{"code": "not_found"}', b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n"
                             + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 24)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as out:
        out.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    counters.ids.close()


if __name__ == "__main__":
    asyncio.run(counting_server(sys.argv[1], sys.argv[2]))
