"""Real HTTP servers on 127.0.0.1 for the fakes: started in a thread, quiet about clients
that go away, and able to trickle an answer one byte at a time."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO


class QuietServer(ThreadingHTTPServer):
    """Clients that vanish mid-request (a killed service, a timeout) are expected."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing: the fakes record what matters themselves."""


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[QuietServer, str, threading.Thread]:
    """A server for ``handler`` on a free loopback port (not started), its URL and thread."""
    server = QuietServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval makes shutdown (every test's teardown) quick.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    return server, url, thread


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_slowly(out: BinaryIO, data: bytes, seconds: float, interval: float = 0.5) -> bool:
    """Write ``data`` one byte every ``interval`` (never silent longer than that, so no
    per-read timeout fires) over about ``seconds``; False when the client went away."""
    deadline = time.monotonic() + seconds
    position = 0
    try:
        while position < len(data) - 1 and time.monotonic() < deadline:
            out.write(data[position:position + 1])
            out.flush()
            position += 1
            time.sleep(interval)
        out.write(data[position:])
        out.flush()
    except OSError:
        return False
    return True


def padded(payload: bytes, seconds: float, interval: float) -> bytes:
    """``payload`` with trailing spaces (valid JSON) so that trickling it lasts ``seconds``."""
    return payload + b" " * int(seconds / interval + 1)
