"""Head-of-line blocking: slow Drift lookups hold up webhooks that need none, outlast the lease, and
keep SIGTERM from handing work back.

The fake Drift API answers ``GET /conversations/{id}`` for the "slow" conversations only
after 12 s (the service's Drift timeout is 10 s, with one retry: 20 s per lookup). Phase 1
posts a "pacer" participant event whose lookup answers in 9 s (it keeps the delivery loop
busy so that what follows is claimed in one round), then ``--slow`` participant events
that need a slow lookup and a burst of 50 ``new_conversation`` webhooks that need no lookup.
It measures how long the 50 take to reach Segment and whether any message is sent twice (a
round that outlasts its lease is claimed and sent again by the other worker). Phase 2 posts
one more slow webhook and 10 no-lookup ones, SIGTERMs the service while a lookup is in
flight, and measures how long it takes to exit and what it left leased (not handed back).

The lease is set to ``--lease`` seconds (default 20) so that the overrun shows within two
minutes; with the default lease of 60 s, three slow lookups in a round overrun it the same
way (the run then takes about four minutes: ``--slow 3 --lease 60 --observe 200``).

    python attacks/headofline.py --checkout PATH [--slow 2 --lease 30 --delay 12]
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Sent, marker, webhook  # noqa: E402


def no_lookup(n: int) -> Sent:
    contact = 43_000_000_000 + n
    data = {"id": 5_000_000 + n, "contactId": contact, "createdAt": 1714419312425 + n,
            "status": "open", "inboxId": 642330, "attackId": marker(f"n{n}")}
    return Sent(f"n{n}", str(contact), webhook("new_conversation", data))


def slow(n: int) -> Sent:
    conversation = 9100 + n
    data = {"conversationId": conversation, "addedParticipants": [77],
            "changedAt": 1714419400000 + n, "attackId": marker(f"slow{n}")}
    return Sent(f"slow{n}", str(44_000_000_000 + n),
                webhook("conversation_participant_added", data), "slow")


def graceful_timeout(checkout: str) -> float | None:
    for name in ("drift_segment_source/gunicorn_conf.py", "gunicorn.conf.py"):
        try:
            text = (Path(checkout) / name).read_text()
        except OSError:
            continue
        match = re.search(r"^graceful_timeout\s*=\s*([0-9.]+)", text, re.MULTILINE)
        if match:
            return float(match.group(1))
    return None


def main() -> None:
    args = harness.arguments(__doc__, lambda parser: (
        parser.add_argument("--slow", type=int, default=2),
        parser.add_argument("--no-lookup", type=int, default=50),
        parser.add_argument("--delay", type=float, default=12.0,
                            help="seconds the fake Drift API takes to answer a slow lookup"),
        parser.add_argument("--lease", type=float, default=20.0),
        parser.add_argument("--observe", type=float, default=80.0,
                            help="seconds to watch phase 1 (until a double send shows)"),
        parser.add_argument("--prompt", type=float, default=5.0,
                            help="a no-lookup webhook delivered later than this is late")))
    run = harness.Run(args, env={"DELIVERY_LEASE_SECONDS": str(args.lease),
                                 "WEB_CONCURRENCY": "2"})
    report: dict[str, Any] = {}
    try:
        for n in range(args.slow + 2):
            conversation = 9100 + n
            run.drift.conversations[str(conversation)] = (
                {"id": conversation, "contactId": 44_000_000_000 + n, "status": "open",
                 "inboxId": 642330, "createdAt": 1714419312425, "updatedAt": 1714419312425},
                args.delay if n <= args.slow else 9.0)
        run.service.start()

        # Phase 1: the pacer occupies the loop for 9 s; the rest gathers meanwhile.
        pacer = slow(args.slow + 1)
        pacer.group = "pacer"
        pacer.answer = harness.post_one(run.service.url, pacer.body)
        harness.wait_until(lambda: run.drift.in_flight > 0, 10, step=0.1)
        slows = [slow(n) for n in range(args.slow)]
        for item in slows:
            item.answer = harness.post_one(run.service.url, item.body)
        quick = [no_lookup(n) for n in range(args.no_lookup)]
        answers = harness.post_concurrently(run.service.url, [item.body for item in quick], 8)
        for item, answer in zip(quick, answers, strict=True):
            item.answer = answer
        phase_started = time.monotonic()
        wanted = {item.contact for item in quick}

        def settled() -> bool:
            seen = wanted <= set(harness.delivered_ids(run.segment))
            doubled = any(count > 1 for count in harness.message_id_counts(run.segment).values())
            return seen and doubled

        harness.wait_until(settled, args.observe, step=0.5)
        observed = round(time.monotonic() - phase_started, 1)
        first_seen: dict[str, float] = {}
        for at, message in run.segment.messages():
            first_seen.setdefault(str(message.get("anonymousId")), at)
        waits = sorted(first_seen[item.contact] - item.answer.at for item in quick
                       if item.answer and item.contact in first_seen)
        counts = harness.message_id_counts(run.segment)
        doubled = sum(1 for count in counts.values() if count > 1)
        lookups_phase1 = len(run.drift.lookups())

        # Phase 2: SIGTERM while a round waits on a slow lookup.
        extra_slow = slow(args.slow)
        extra_slow.answer = harness.post_one(run.service.url, extra_slow.body)
        late = [no_lookup(1000 + n) for n in range(10)]
        for item in late:
            item.answer = harness.post_one(run.service.url, item.body)
        time.sleep(1.0)
        # SIGTERM while a delivery round waits on a slow lookup (bounded wait).
        harness.wait_until(lambda: run.drift.in_flight > 0, 30, step=0.1)
        time.sleep(1.0)
        in_flight_at_term = run.drift.in_flight
        before_term = set(harness.delivered_ids(run.segment))
        exit_seconds = run.service.terminate(timeout=60)
        rows = run.db.rows()
        delivered_now = set(harness.delivered_ids(run.segment))
        left_leased = [row for row in rows if row.get("state") == "pending"
                       and row.get("lease_owner")]
        late_delivered = sum(1 for item in late if item.contact in delivered_now)
        late_pending = sum(1 for item in late
                           if (harness.row_for(rows, item.name) or {}).get("state") == "pending")

        sent = [pacer] + slows + quick + [extra_slow] + late
        tally = harness.tally(quick, rows, run.segment)
        grace = graceful_timeout(args.checkout)
        report = {
            "finding": "head-of-line", "checkout": args.checkout, **tally,
            "posted": len(sent),
            "answered": harness.answered(item.answer for item in sent if item.answer),
            "extra": {
                "slow_lookups": args.slow, "drift_delay_seconds": args.delay,
                "lease_seconds": args.lease,
                "no_lookup_delivered": len(waits),
                "no_lookup_wait_seconds_p50": round(statistics.median(waits), 2)
                if waits else None,
                "no_lookup_wait_seconds_max": round(waits[-1], 2) if waits else None,
                "message_ids_sent_twice": doubled,
                "phase1_observed_seconds": observed,
                "drift_lookups_phase1": lookups_phase1,
                "sigterm_exit_seconds": exit_seconds,
                "lookups_in_flight_at_sigterm": in_flight_at_term,
                "graceful_timeout": grace,
                "left_leased_after_exit": len(left_leased),
                "late_no_lookup_delivered_before_exit": late_delivered,
                "late_no_lookup_pending_after_exit": late_pending,
                "late_delivered_before_sigterm": sum(1 for item in late
                                                     if item.contact in before_term),
                "log_errors": harness.error_lines(run.service.log_text()),
            },
        }
        late_wait = not waits or waits[-1] > args.prompt or len(waits) < len(quick)
        slow_exit = exit_seconds is None or (grace is not None and exit_seconds > grace)
        report["bug"] = bool(late_wait or doubled or slow_exit or left_leased
                             or tally["lost"] or tally["five_xx"])
    finally:
        run.close()
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
