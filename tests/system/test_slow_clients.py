"""Slow clients against the real service (``serve``: gunicorn), with no proxy in front.

gthread reads a request on a pool thread with no time limit of its own: a few clients
sending a byte now and then used to hold every thread, so no webhook was answered, and
SIGTERM waited for them until gunicorn killed the worker. Each request now has
``REQUEST_READ_TIMEOUT_SECONDS`` to arrive (a cut-off webhook body gets a 408), a silent
connection waits in the poller without a thread, and SIGTERM does not wait for either.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support.fake_segment import FakeSegment
from ..support.service import Service, wait_for
from ..support.webhooks import TOKEN, distinct_webhooks, post_concurrently
from .conftest import StartService, service_env, states

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "drift"
READ_TIMEOUT = 1.5
HEAD = (b"POST /webhooks/drift HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Content-Length: 300\r\n\r\n")
WEBHOOK = (FIXTURES / "new_conversation" / "seed_example.json").read_bytes()


def slow_env(database: Path, segment: FakeSegment | None = None, **extra: object
             ) -> dict[str, str]:
    """One worker with two threads: two slow clients would be enough to hold them all."""
    return service_env(f"sqlite:///{database}", segment, WEB_THREADS=2,
                       REQUEST_READ_TIMEOUT_SECONDS=READ_TIMEOUT, **extra)


@pytest.fixture(scope="module")
def service(start_module_service: StartService, module_folder: Path) -> Iterator[Service]:
    """The service the slow clients of this module connect to (dry-run: no write key)."""
    yield start_module_service(slow_env(module_folder / "store.sqlite3"))


class SlowClient(threading.Thread):
    """Sends ``head`` and then ``drip`` one byte every 0.2 s; records the answer and when."""

    def __init__(self, port: int, head: bytes, drip: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.head, self.drip = head, drip
        self.answer: bytes | None = None
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        started = time.monotonic()
        self.sock.sendall(self.head)
        self.sock.settimeout(0.2)
        for byte in self.drip:
            try:
                self.sock.sendall(bytes([byte]))
                self.answer = self.sock.recv(4096)
                self.seconds = time.monotonic() - started
                self.read_rest()
                return
            except TimeoutError:
                continue
            except OSError:
                self.answer = b""
                break
        self.seconds = time.monotonic() - started
        self.sock.close()

    def read_rest(self) -> None:
        """The rest of an answer whose first part has come (its body may come apart)."""
        self.sock.settimeout(2)
        try:
            while self.answer and (more := self.sock.recv(4096)):
                self.answer += more
        except OSError:
            pass
        self.sock.close()


def post_webhook(service: Service) -> tuple[int, float]:
    """An ordinary Drift webhook: its status and how long the answer took."""
    started = time.monotonic()
    answer = requests.post(service.url + "/webhooks/drift", data=WEBHOOK, timeout=20,
                           headers={"Content-Type": "application/json",
                                    "X-Verification-Token": TOKEN})
    return answer.status_code, time.monotonic() - started


def test_a_slow_body_is_cut_off_with_408_and_webhooks_are_answered(service: Service) -> None:
    slow = [SlowClient(service.port, HEAD, b" " * 300) for _ in range(2)]
    time.sleep(0.3)  # both threads are now reading a slow body
    status, seconds = post_webhook(service)
    assert status == 200
    # The webhook waited for a thread at most until the slow bodies were cut off.
    assert seconds < READ_TIMEOUT + 2
    for client in slow:
        client.join(10)
        assert client.answer is not None and client.answer.startswith(b"HTTP/1.1 408"), (
            client.answer, service.log())
        assert b'"error":"request_timeout"' in client.answer
        assert READ_TIMEOUT - 0.5 < client.seconds < READ_TIMEOUT + 1.5


def test_a_request_head_that_never_ends_is_closed(service: Service) -> None:
    slow = [SlowClient(service.port, b"P", HEAD[1:] * 10) for _ in range(2)]
    time.sleep(0.3)
    status, seconds = post_webhook(service)
    assert status == 200 and seconds < READ_TIMEOUT + 2
    for client in slow:
        client.join(10)
        assert client.answer == b""  # closed without an answer: there was no request yet
        assert client.seconds < READ_TIMEOUT + 1.5


def test_silent_connections_hold_no_thread(service: Service) -> None:
    silent = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(50)]
    try:
        time.sleep(0.3)
        status, seconds = post_webhook(service)
        assert status == 200 and seconds < 1.0
    finally:
        for connection in silent:
            connection.close()


def test_sigterm_with_slow_and_silent_clients_exits_well_inside_the_graceful_timeout(
        start_service: StartService, tmp_path: Path, segment: FakeSegment) -> None:
    # Rows in flight to a slow Segment (a second a batch), a long lease: SIGTERM stops the
    # delivery loop at once, not after the connections end, and hands its rows back.
    segment.delay = 1.0
    env = slow_env(tmp_path / "store.sqlite3", segment, DELIVERY_BATCH_SIZE=10,
                   DELIVERY_LEASE_SECONDS=600)
    service = start_service(env)
    post_concurrently(service.url, distinct_webhooks(30), connections=2)
    assert wait_for(lambda: len(segment.messages) >= 10, 15)
    silent = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(20)]
    slow = SlowClient(service.port, HEAD, b" " * 300)
    time.sleep(0.3)
    code = service.stop()
    log = service.log_text()
    for connection in silent:
        connection.close()
    slow.join(10)
    assert code == 0 and service.stop_seconds is not None, log
    assert service.stop_seconds < READ_TIMEOUT + 3, log
    assert "delivery loop stopped" in log
    segment.delay = 0.0
    restarted = start_service(env, name="restarted")
    assert wait_for(lambda: states(restarted) == {"delivered": 30}, 15), states(restarted)
