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
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fake_segment import FakeSegment  # noqa: E402
from tests.support.service import Service  # noqa: E402
from tests.support.webhooks import TOKEN  # noqa: E402


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
    folder = Path(tempfile.mkdtemp(prefix="dss-outage-"))
    database = folder / "store.sqlite3"
    with FakeSegment() as segment:
        segment.fail_always(503)
        service = Service("serve", {
            "DATABASE_URL": f"sqlite:///{database}",
            "SEGMENT_WRITE_KEY": "bench-write-key-0123456789", "SEGMENT_HOST": segment.url,
            "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING",
        }, folder / "service.log", checkout=args.checkout)
        try:
            report = measure(args, service, segment, database)
        finally:
            service.stop()
    print(json.dumps(report))


def measure(args: argparse.Namespace, service: Service, segment: FakeSegment,
            database: Path) -> dict[str, object]:
    """Post the backlog during the outage, end it, and time the drain."""
    service.wait_ready()
    url = service.url
    outage_started = time.monotonic()
    with requests.Session() as session, ThreadPoolExecutor(16) as pool:
        def post(number: int) -> int:
            return session.post(url + "/webhooks/drift", data=webhook(number), timeout=30,
                                headers={"Content-Type": "application/json"}).status_code
        statuses = list(pool.map(post, range(args.backlog)))
    posted_seconds = time.monotonic() - outage_started
    time.sleep(max(0.0, args.outage - posted_seconds))
    failed_posts = segment.requests
    segment.recover()
    recovered = time.time()
    while time.time() - recovered < args.limit:
        if len(segment.message_id_counts()) >= args.backlog:
            break
        time.sleep(0.2)
    times = [at for at, _ in list(segment.received)]
    received = segment.message_id_counts()
    with sqlite3.connect(database) as connection:
        attempts = connection.execute(
            "SELECT coalesce(sum(attempts), 0), coalesce(max(attempts), 0) "
            "FROM webhooks").fetchone()
    return {
        "checkout": args.checkout, "backlog": args.backlog, "outage_seconds": args.outage,
        "accepted": statuses.count(200), "posting_seconds": round(posted_seconds, 1),
        "failed_posts_during_outage": failed_posts,
        "recovery_to_first_delivery_seconds":
            round(min(times) - recovered, 2) if times else None,
        "recovery_to_drained_seconds":
            None if len(received) < args.backlog else round(max(times) - recovered, 2),
        "delivered": len(received), "sent_twice": sum(received.values()) - len(received),
        "attempts_spent": {"total": attempts[0], "max_per_row": attempts[1]},
    }


if __name__ == "__main__":
    main()
