"""The floor of durable ingest: one SQLite ``synchronous=FULL`` commit of one row, timed.

What no webhook answer can beat on this disk: a WAL-mode SQLite database (the service's own
pragmas) in the given folder, one row of about a webhook's size inserted and committed per
transaction, at a fixed rate (each commit waits for its slot, as a paced request would).

``python floor.py FOLDER RATE SECONDS``; prints ``FLOOR_RESULT {json}`` with the latency of
every commit as a histogram of microseconds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections import Counter


def main() -> None:
    folder, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    path = os.path.join(folder, f"floor-{os.getpid()}.sqlite3")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    payload = "x" * 1200  # a stored webhook is about 0.5 to 2 KB
    latencies: Counter[int] = Counter()
    interval = 1 / rate
    started = time.monotonic()
    slot = started
    while slot < started + seconds:
        wait = slot - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        began = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO rows (payload) VALUES (?)", (payload,))
        connection.execute("COMMIT")
        latencies[round((time.perf_counter() - began) * 1e6)] += 1
        slot += interval
    connection.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except OSError:
            pass
    print("FLOOR_RESULT " + json.dumps({"histogram": sorted(latencies.items())}), flush=True)


if __name__ == "__main__":
    main()
