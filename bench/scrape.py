"""What a ``/metrics`` scrape costs with 1 stored row and with 1,000,000.

Builds the app on a fresh SQLite file (or ``--database-url``, an empty database), stores
one webhook, times ``--scrapes`` scrapes of ``/metrics``; then adds ``--rows`` delivered
rows and times them again. For comparison it times the query scrapes used to run (a
``GROUP BY`` over the whole table, ``Store.counts``) at both sizes. Prints one JSON object
with the medians in milliseconds and the ratio big/small of each.

    .venv/bin/python bench/scrape.py [--rows 1000000] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drift_segment_source import create_app
from drift_segment_source.store.db import webhooks

CHUNK = 20_000


def median_ms(call: Callable[[], Any], times: int) -> float:
    """The median wall time of ``call`` in milliseconds."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def add_delivered_rows(app: Any, count: int) -> None:
    """``count`` delivered rows, as a week of traffic would leave them."""
    now = time.time()
    with app.extensions["store"].engine.begin() as connection:
        for start in range(0, count, CHUNK):
            connection.execute(webhooks.insert(), [
                {"org_id": 5000883, "event_type": "new_conversation",
                 "dedupe_key": f"drift-new_conversation-{number:032x}",
                 "payload": '{"type":"new_conversation","orgId":5000883,"data":{}}',
                 "received_at": now - 3600, "queued_at": now - 3600, "state": "delivered",
                 "attempts": 1, "next_attempt_at": now - 3600, "finished_at": now - 3000}
                for number in range(start + 1, min(count, start + CHUNK) + 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'scrape.sqlite3'}"
    app = create_app({"DATABASE_URL": url, "DRIFT_VERIFICATION_TOKEN": "bench-token",
                      "LOG_LEVEL": "WARNING"})
    store = app.extensions["store"]
    store.migrate()
    client = app.test_client()
    client.post("/webhooks/drift", headers={"X-Verification-Token": "bench-token"}, json={
        "type": "new_conversation", "orgId": 5000883,
        "data": {"id": 1, "contactId": 2, "createdAt": 1714419312425}})

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    small = {"scrape_ms": median_ms(scrape, args.scrapes),
             "old_group_by_ms": median_ms(store.counts, args.scrapes)}
    started = time.perf_counter()
    add_delivered_rows(app, args.rows)
    store.analyze()
    seeded = time.perf_counter() - started
    big = {"scrape_ms": median_ms(scrape, args.scrapes),
           "old_group_by_ms": median_ms(store.counts, max(3, args.scrapes // 10))}
    print(json.dumps({
        "database": url.split(":")[0], "rows": {"small": 1, "big": args.rows + 1},
        "seed_seconds": round(seeded, 1), "small": small, "big": big,
        "scrape_ratio_big_over_small": round(big["scrape_ms"] / small["scrape_ms"], 2),
        "old_group_by_ratio_big_over_small":
            round(big["old_group_by_ms"] / small["old_group_by_ms"], 1),
    }))
    store.close()


if __name__ == "__main__":
    main()
