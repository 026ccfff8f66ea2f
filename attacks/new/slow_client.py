"""Slow clients: one hostile connection that sends its body slowly (no token needed: the body
is read before the token is checked) makes SIGTERM end in SIGKILL with the delivery loop
never told to stop; four of them stop the service from answering anyone.

gunicorn's gthread worker, on SIGTERM, first waits up to graceful_timeout (25 s) for its open
connections; only then does the worker return and gunicorn call worker_exit, the ONLY place
the delivery loop is told to stop (gunicorn_conf.worker_exit -> Delivery.stop). The arbiter
SIGKILLs the worker at the same 25 s. Meanwhile the loop keeps claiming and posting new
rounds; at the kill its rows stay leased (DELIVERY_LEASE_SECONDS) instead of being handed back.
And a body read has no timeout: WEB_THREADS slow connections per worker leave no thread for
Drift's webhooks.

Real service (`serve`, WEB_CONCURRENCY=1, WEB_THREADS=4, SQLite), a fake Segment that answers
each batch after 4 s, DELIVERY_BATCH_SIZE=10, 150 webhooks posted first.
Phase A: SIGTERM with one slow client connected (1 byte/s of a 1,000-byte body).
Control: the same without the slow client.
Phase B (fresh service): 4 slow clients, then one ordinary webhook with a 15 s timeout.

    .venv/bin/python attacks/new/slow_client.py --checkout PATH
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
from harness import webhook  # noqa: E402


def slow_client(port: int, stop: threading.Event, length: int = 1000) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall((f"POST /webhooks/drift HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  f"application/json\r\nContent-Length: {length}\r\n\r\n").encode())
    sent = 0
    try:
        while sent < length - 1 and not stop.is_set():
            sock.sendall(b" ")
            sent += 1
            stop.wait(1.0)
    except OSError:
        pass
    finally:
        sock.close()


def leased(db: harness.Database) -> int:
    return sum(1 for row in db.rows() if row.get("lease_owner") and row.get("state") == "pending")


def phase_sigterm(args: Any, with_slow_client: bool) -> dict[str, Any]:
    run = harness.Run(args, env={"WEB_CONCURRENCY": "1", "WEB_THREADS": "4",
                                 "DELIVERY_BATCH_SIZE": "10"})
    original = run.segment._answer

    def slow_answer(*a: Any) -> Any:
        time.sleep(4)
        return original(*a)

    run.segment._answer = slow_answer  # type: ignore[method-assign]
    stop = threading.Event()
    try:
        run.service.start()
        now_ms = int(time.time() * 1000)
        bodies = [webhook("new_conversation", {"id": 8_900_000 + n, "contactId": 46_900_000_000 + n,
                                               "createdAt": now_ms}) for n in range(150)]
        answers = harness.post_concurrently(run.service.url, bodies, 4)
        if with_slow_client:
            threading.Thread(target=slow_client, args=(run.service.port, stop), daemon=True).start()
        time.sleep(3)
        sent_at_term = time.time()
        exit_seconds = run.service.terminate(timeout=60)
        stop.set()
        after = [at for at, _ in run.segment.messages() if at > sent_at_term + 1]
        log = run.service.log_text()
        return {
            "slow_client": with_slow_client,
            "answered": harness.answered(answers),
            "exit_seconds": exit_seconds,
            "graceful_timeout": 25,
            "delivery_loop_logged_stopped": '"delivery loop stopped"' in log,
            "messages_reaching_segment_later_than_1s_after_sigterm": len(after),
            "rows_left_leased_after_exit": leased(run.db),
            "stored": harness.states(run.db.rows()),
        }
    finally:
        stop.set()
        run.close()


def phase_intake(args: Any) -> dict[str, Any]:
    run = harness.Run(args, env={"WEB_CONCURRENCY": "1", "WEB_THREADS": "4"})
    stop = threading.Event()
    try:
        run.service.start()
        for _ in range(4):
            threading.Thread(target=slow_client, args=(run.service.port, stop), daemon=True).start()
        time.sleep(2)
        started = time.monotonic()
        answer = harness.post_one(run.service.url, webhook("new_conversation", {
            "id": 8_999_999, "contactId": 46_999_999_999, "createdAt": int(time.time() * 1000)}),
            timeout=15)
        return {"slow_clients": 4, "web_threads": 4, "ordinary_webhook_answer": answer.label,
                "seconds_waited": round(time.monotonic() - started, 1)}
    finally:
        stop.set()
        run.close()


def main() -> None:
    args = harness.arguments(__doc__)
    report = {"sigterm_with_slow_client": phase_sigterm(args, True),
              "sigterm_control": phase_sigterm(args, False),
              "intake_with_4_slow_clients": phase_intake(args)}
    a = report["sigterm_with_slow_client"]
    report["bug"] = bool(a["rows_left_leased_after_exit"] or not a["delivery_loop_logged_stopped"]
                         or report["intake_with_4_slow_clients"]["ordinary_webhook_answer"]
                         != "200 accepted")
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
