"""What log redaction costs per line, at 0 (self-hosted), 1, 1,000 and 10,000 orgs.

Each org brings three secrets (an access token, a refresh token, a write key), registered
with ``REDACTOR.add`` one by one as ``orgs.py`` does when it decrypts them; the environment
brings five (``add_configured``). Lines are formatted by the service's ``JsonLines`` and by
a baseline: the same formatter without any redaction. The earlier redaction (every
secret in one alternation, recompiled on each addition) is measured beside it for the
before/after; its registrations are compiled once here, or 10,000 orgs would take hours.

``python bench/redaction.py [--orgs 0,1,1000,10000] [--seconds 1.0]``; prints a Markdown
table and ``REDACTION_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import string
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drift_segment_source import logs  # noqa: E402

ALPHANUMERIC = string.ascii_letters + string.digits
CONFIGURED = ["fixture-verification-token", "drift-client-secret-0123456789",
              "secret-key-for-the-relay-0123456789abcdef", "adminTokenabcdef0123456789",
              "postgresql://relay:pw@db.internal:5432/relay"]


def key() -> str:
    """A secret shaped like a Segment write key or a Drift OAuth token."""
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(32))


def records() -> list[logging.LogRecord]:
    """The lines the service writes most, and one careless line holding no secret."""
    def record(name: str, level: int, message: str, *args: Any, **extra: Any
               ) -> logging.LogRecord:
        made = logging.LogRecord(name, level, __file__, 1, message, args, None)
        made.__dict__.update(extra)
        return made

    return [
        record("drift_segment_source.webhooks", logging.INFO, "webhook %s", "accepted",
               outcome="accepted", type="new_conversation", status=200, webhook_id=184467,
               request_id=secrets.token_hex(16), duration_ms=3.21),
        record("drift_segment_source.delivery", logging.INFO, "delivery round",
               owner="web-12345-" + secrets.token_hex(4), delivered=500, retried=0, held=0,
               dead=0),
        record("drift_segment_source.delivery", logging.WARNING, "segment refused a batch",
               status=503, messages=250),
        record("drift_segment_source.orgs", logging.WARNING,
               "Drift refused to refresh the org's token: the org must re-install the app",
               org_id=5000883, status=401, reason="invalid_grant"),
    ]


class Baseline(logging.Formatter):
    """The service's JSON line, built the same way, with no redaction at all."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "name": record.name, "message": record.getMessage()}
        for name, value in record.__dict__.items():
            if name not in logs.STANDARD_ATTRIBUTES:
                entry[name] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class OneAlternation(Baseline):
    """The earlier redaction: every secret in one growing alternation."""

    def __init__(self, secret_values: list[str]) -> None:
        super().__init__()
        spellings = set(secret_values) | {json.dumps(s)[1:-1] for s in secret_values}
        self.pattern = re.compile("|".join(
            map(re.escape, sorted(spellings, key=len, reverse=True))))

    def format(self, record: logging.LogRecord) -> str:
        return self.pattern.sub(logs.REDACTED, super().format(record))


def per_line(formatters: list[logging.Formatter], lines: list[logging.LogRecord],
             seconds: float) -> list[float]:
    """Microseconds per formatted line for each formatter: the best of five rounds, taken
    in turns so that a busy moment of the machine weighs on all of them alike."""
    def run(formatter: logging.Formatter, loops: int) -> float:
        started = time.perf_counter()
        for _ in range(loops):
            for line in lines:
                formatter.format(line)
        return time.perf_counter() - started

    loops = []
    for formatter in formatters:  # calibrate: about seconds / 5 per round
        count = 1
        while run(formatter, count) < seconds / 5 and count < 1_000_000:
            count *= 2
        loops.append(count)
    best = [float("inf")] * len(formatters)
    for _ in range(5):
        for index, formatter in enumerate(formatters):
            best[index] = min(best[index], run(formatter, loops[index]))
    return [elapsed / (count * len(lines)) * 1e6 for elapsed, count in zip(best, loops,
                                                                           strict=True)]


def measure(orgs: int, seconds: float) -> dict[str, Any]:
    """One row of the table: ``orgs`` installed orgs."""
    redactor = logs.Redactor()
    redactor.add_configured(CONFIGURED)
    tracemalloc.start()
    # Made inside the trace: the words the redactor keeps are these very strings.
    org_secrets = [key() for _ in range(3 * orgs)]
    started = time.perf_counter()
    for secret in org_secrets:
        redactor.add([secret])
    registering = time.perf_counter() - started
    memory = tracemalloc.get_traced_memory()[0] - sys.getsizeof(org_secrets)
    tracemalloc.stop()
    # The scrub must still work: every org secret logged by accident comes out redacted.
    assert all(redactor.scrub(f"oops {secret}.") == f"oops {logs.REDACTED}."
               for secret in org_secrets)
    logs.REDACTOR = redactor  # JsonLines scrubs with the module's redactor
    started = time.perf_counter()
    before_formatter = OneAlternation(CONFIGURED + org_secrets)
    compiling = time.perf_counter() - started
    lines = records()
    baseline, service = per_line([Baseline(), logs.JsonLines()], lines, seconds)
    # The earlier formatter is three orders slower at 10,000 orgs: a tenth of the time is plenty.
    [before] = per_line([before_formatter], lines, seconds / 10)
    return {"orgs": orgs, "secrets": len(org_secrets) + len(CONFIGURED),
            "baseline_us": baseline, "service_us": service, "ratio": service / baseline,
            "register_us_per_secret": registering / max(1, len(org_secrets)) * 1e6,
            "memory_bytes": memory, "one_alternation_us": before,
            "one_alternation_compile_s": compiling}


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", default="0,1,1000,10000")
    parser.add_argument("--seconds", type=float, default=1.0)
    arguments = parser.parse_args()
    rows = [measure(int(count), arguments.seconds) for count in arguments.orgs.split(",")]
    print("| orgs (secrets) | baseline µs/line | service µs/line | ratio | add µs/secret "
          "| org secrets memory | one alternation µs/line (one compile) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        adding, memory = "–", "–"
        if row["orgs"]:
            adding = f"{row['register_us_per_secret']:.1f}"
            memory = f"{row['memory_bytes'] / 1024:,.0f} KiB"
        print(f"| {row['orgs']:,} ({row['secrets']:,}) | {row['baseline_us']:.1f} "
              f"| {row['service_us']:.1f} | {row['ratio']:.2f}× | {adding} | {memory} "
              f"| {row['one_alternation_us']:,.1f} "
              f"({row['one_alternation_compile_s']:.2f} s to compile) |")
    print("REDACTION_RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
