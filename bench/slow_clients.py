"""What slow clients do to a service with no buffering proxy in front.

Starts the real service (``drift-segment-source serve``: gunicorn, SQLite, dry-run) on
127.0.0.1, opens K hostile connections of one kind, and meanwhile posts ordinary webhooks
one after another, timing each answer. Kinds:

- ``body``: a whole request head announcing a 1,000-byte body, then one byte a second;
- ``head``: the request line, one byte a second (the head never ends);
- ``silent``: connects and sends nothing.

An attacker that is cut off or answered connects again at once, so K stay open. The service
gives each request ``REQUEST_READ_TIMEOUT_SECONDS`` to arrive (5 s by default). At the end
the service gets SIGTERM with the attackers still connected: how long until it has exited.

``python bench/slow_clients.py [--plan "body=4,8,16,32;head=8,32;silent=32,2500"]
[--seconds 20] [--checkout PATH] [--env NAME=VALUE]``; ``--checkout`` runs the package found
at PATH instead (e.g. a worktree of an older commit) for a before/after. Prints a Markdown
table and ``SLOW_CLIENTS_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.service import Service  # noqa: E402
from tests.support.webhooks import TOKEN  # noqa: E402

WEBHOOK = json.loads((ROOT / "fixtures/drift/new_conversation/seed_example.json").read_text())


class Served(Service):
    """``serve`` (tests/support/service.py), dry-run on a fresh SQLite file, ready."""

    def __init__(self, work: Path, checkout: Path | None, env: dict[str, str]) -> None:
        super().__init__("serve", {"LOG_LEVEL": "WARNING",
                                   "DATABASE_URL": f"sqlite:///{work / 'store.sqlite3'}", **env},
                         work / "service.log", checkout=None if checkout is None
                         else str(checkout))
        self.wait_ready()

    def stop(self, timeout: float = 60) -> float:  # type: ignore[override]
        """SIGTERM; the seconds until the process exited."""
        super().stop(timeout)
        return float(self.stop_seconds or 0.0)


class Attacker(threading.Thread):
    """One hostile connection, opened again whenever the service ends it."""

    def __init__(self, port: int, kind: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.kind, self.stop = port, kind, stop
        self.connections = 0
        self.answers: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except OSError:
                self.stop.wait(0.1)

    def once(self) -> None:
        head = (b"POST /webhooks/drift HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                b"application/json\r\nContent-Length: 1000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            self.connections += 1
            if self.kind == "body":
                sock.sendall(head)
            sock.settimeout(1.0)
            sent = 0
            while not self.stop.is_set():
                if self.kind != "silent":
                    sock.sendall((head if self.kind == "head" else b" " * 1000)[sent:sent + 1])
                    sent += 1
                try:
                    answer = sock.recv(200)
                except TimeoutError:
                    continue
                status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") \
                    else "closed"
                self.answers[status] = self.answers.get(status, 0) + 1
                return


class SilentFlood(threading.Thread):
    """``count`` connections that send nothing, each opened again once the service closes it
    (one thread for all of them: thousands of threads would measure this script)."""

    def __init__(self, port: int, count: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.stop = port, count, stop
        self.connections = 0
        self.answers: dict[str, int] = {}

    def open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))  # completes in the kernel's backlog
        selector.register(sock, selectors.EVENT_READ)
        self.connections += 1

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for _ in range(self.count):
                self.open(selector)
            while not self.stop.is_set():
                for key, _ in selector.select(timeout=0.5):
                    sock: Any = key.fileobj
                    selector.unregister(sock)
                    sock.close()
                    self.answers["closed"] = self.answers.get("closed", 0) + 1
                    if not self.stop.is_set():
                        self.open(selector)
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


def probe(url: str, seconds: float) -> dict[str, Any]:
    """Ordinary webhooks, one after another, for ``seconds``: how long each answer took."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    number = 0
    finish = time.monotonic() + seconds
    while time.monotonic() < finish:
        number += 1
        body = dict(WEBHOOK, data=dict(WEBHOOK["data"], id=10_000_000 + number))
        started = time.monotonic()
        try:
            answer = requests.post(url + "/webhooks/drift", json=body, timeout=30,
                                   headers={"X-Verification-Token": TOKEN})
            if answer.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures[str(answer.status_code)] = failures.get(str(answer.status_code), 0) + 1
        except requests.RequestException as error:
            name = type(error).__name__
            failures[name] = failures.get(name, 0) + 1
        time.sleep(0.2)
    ordered = sorted(latencies)
    return {
        "answered": len(latencies), "failed": failures,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        "max_ms": ordered[-1] * 1000 if ordered else None,
        "over_1s": sum(1 for latency in ordered if latency > 1.0),
    }


def measure(kind: str, clients: int, seconds: float, checkout: Path | None,
            env: dict[str, str]) -> dict[str, Any]:
    """One row: ``clients`` attackers of ``kind`` against a fresh service."""
    with tempfile.TemporaryDirectory(prefix="dss-slow-") as work:
        served = Served(Path(work), checkout, env)
        stop = threading.Event()
        attackers: list[Any] = ([SilentFlood(served.port, clients, stop)] if kind == "silent"
                                else [Attacker(served.port, kind, stop) for _ in range(clients)])
        for attacker in attackers:
            attacker.start()
        time.sleep(2)  # let them take the threads first
        result = probe(served.url, seconds)
        answers: dict[str, int] = {}  # before SIGTERM: then every reconnection is refused
        for attacker in attackers:
            for status, count in dict(attacker.answers).items():
                answers[status] = answers.get(status, 0) + count
        # SIGTERM while they are still connected: how long until the service has exited.
        exit_seconds = served.stop()
        stop.set()
    return {"kind": kind, "clients": clients, **result, "attacker_answers": answers,
            "sigterm_exit_s": exit_seconds}


def main() -> None:
    """Measure every kind at every count and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="body=4,8,16,32;head=8,32;silent=32,2500",
                        help="kind=counts;...: the attacks, each against a fresh service")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--checkout", type=Path)
    parser.add_argument("--env", action="append", default=[],
                        help="NAME=VALUE for the service (e.g. WEB_THREADS=8)")
    arguments = parser.parse_args()
    env = {"WEB_CONCURRENCY": "2", "WEB_THREADS": "4",
           **dict(item.split("=", 1) for item in arguments.env)}
    plan = [(kind, int(count)) for part in arguments.plan.split(";")
            for kind, counts in [part.split("=")] for count in counts.split(",")]
    rows = [measure(kind, clients, arguments.seconds, arguments.checkout, env)
            for kind, clients in plan]
    print("| attack | clients | webhooks answered | failed | p50 | max | over 1 s "
          "| attackers got | SIGTERM to exit |")
    print("|---|---:|---:|---|---:|---:|---:|---|---:|")
    for row in rows:
        p50 = "–" if row["p50_ms"] is None else f"{row['p50_ms']:,.0f} ms"
        worst = "–" if row["max_ms"] is None else f"{row['max_ms']:,.0f} ms"
        print(f"| {row['kind']} | {row['clients']} | {row['answered']} "
              f"| {row['failed'] or 0} | {p50} | {worst} | {row['over_1s']} "
              f"| {row['attacker_answers'] or '–'} | {row['sigterm_exit_s']:.1f} s |")
    print("SLOW_CLIENTS_RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
