"""Poison row: one row that cannot be prepared freezes every row claimed with it.

Phase 1 posts a ``conversation_participant_added`` without ``contactId`` whose conversation
(fake Drift API) has no ``contactId`` either, and waits for it: a message must never leave
with ``anonymousId`` "None". Phase 2 posts a burst of 50 good webhooks (no lookup needed)
with one ``phone_captured`` in the middle whose data has only ``conversationId`` and
``phoneNumber`` (``authorType`` "user") and whose conversation has no ``contactId``; then
counts how many of the 50 reach Segment within ``--wait`` seconds.

``--variant deep-json`` makes the phone_captured's conversation lookup answer a 200 whose
JSON is nested 5,000 deep instead (a Drift API or proxy answering garbage).
``--variant retry-after`` makes that lookup answer 429 with ``Retry-After: 999999999`` and
the fake Segment answer the first batch 503 (a blip): the Drift row's Retry-After becomes
the backoff of every row retried in that round.

    python attacks/poison.py --checkout PATH [--wait 20]
                             [--variant no-contact|deep-json|retry-after]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Sent, marker, webhook  # noqa: E402

PHONE_CONVERSATION = 9001
PARTICIPANT_CONVERSATION = 9002
NO_CONTACT = {"status": "open", "inboxId": 642330, "createdAt": 1714419312425,
              "updatedAt": 1714419312425, "participants": [77]}
BAD_IDS = ("None", "none", "null", "", "undefined")


def good(n: int) -> Sent:
    contact = 42_000_000_000 + n
    data = {"id": 4_000_000 + n, "contactId": contact, "createdAt": 1714419312425 + n,
            "status": "open", "inboxId": 642330, "attackId": marker(f"g{n}")}
    return Sent(f"g{n}", str(contact), webhook("new_conversation", data))


def main() -> None:
    args = harness.arguments(__doc__, lambda parser: (
        parser.add_argument("--good", type=int, default=50),
        parser.add_argument("--connections", type=int, default=8),
        parser.add_argument("--wait", type=float, default=20.0),
        parser.add_argument("--variant", choices=("no-contact", "deep-json", "retry-after"),
                            default="no-contact")))
    run = harness.Run(args)
    report: dict[str, Any] = {}
    try:
        run.drift.conversations[str(PARTICIPANT_CONVERSATION)] = (
            {"id": PARTICIPANT_CONVERSATION, **NO_CONTACT}, 0)
        if args.variant == "no-contact":
            run.drift.conversations[str(PHONE_CONVERSATION)] = (
                {"id": PHONE_CONVERSATION, **NO_CONTACT}, 0)
        elif args.variant == "retry-after":
            run.drift.raw[str(PHONE_CONVERSATION)] = (
                429, b'{"error":"rate_limited"}', {"Retry-After": "999999999"})
        else:
            depth = 5000
            run.drift.raw[str(PHONE_CONVERSATION)] = (
                200, ('{"data":' + "[" * depth + "]" * depth + "}").encode(), {})
        run.service.start()

        # Phase 1: a participant event whose conversation has no contact.
        participant = webhook("conversation_participant_added", {
            "conversationId": PARTICIPANT_CONVERSATION, "addedParticipants": [77],
            "changedAt": 1714419400000, "attackId": marker("participant")})
        participant_answer = harness.post_one(run.service.url, participant)

        def participant_settled() -> bool:
            row = harness.row_for(run.db.rows(), "participant")
            sent = any(message.get("properties", {}).get("conversationId")
                       == PARTICIPANT_CONVERSATION for _, message in run.segment.messages())
            return sent or (row is not None and row.get("state") != "pending")

        harness.wait_until(participant_settled, 10)

        # Phase 2: the burst with the poison row in the middle.
        goods = [good(n) for n in range(args.good)]
        poison = webhook("phone_captured", {
            "conversationId": PHONE_CONVERSATION, "phoneNumber": "+1 555 0100",
            "authorType": "user", "authorId": 77, "attackId": marker("phone")})
        half = len(goods) // 2
        if args.variant == "retry-after":
            run.segment.fail_next = 1
        bodies = [item.body for item in goods[:half]] + [poison] + [
            item.body for item in goods[half:]]
        started = time.time()
        answers = harness.post_concurrently(run.service.url, bodies, args.connections)
        poison_answer = answers[half]
        for item, answer in zip(goods, answers[:half] + answers[half + 1:], strict=True):
            item.answer = answer
        wanted = {item.contact for item in goods}
        harness.wait_until(lambda: wanted <= set(harness.delivered_ids(run.segment)),
                           args.wait)
        delivered = harness.delivered_ids(run.segment)
        within = sum(1 for item in goods if item.contact in delivered)
        first_seen: dict[str, float] = {}
        for at, message in run.segment.messages():
            first_seen.setdefault(str(message.get("anonymousId")), at)
        waits = sorted(first_seen[item.contact] - started for item in goods
                       if item.contact in first_seen)
        rows = run.db.rows()
        tally = harness.tally(goods, rows, run.segment)
        bad_ids = [message for _, message in run.segment.messages()
                   if str(message.get("anonymousId")) in BAD_IDS
                   or (message.get("userId") is not None  # the library sends null
                       and str(message.get("userId")) in BAD_IDS[:3])]

        def fate(name: str, answer: harness.Answer) -> dict[str, Any]:
            row = harness.row_for(rows, name) or {}
            return {"answer": answer.label, "state": row.get("state"),
                    "attempts": row.get("attempts"), "leased": bool(row.get("lease_owner")),
                    "last_error": (row.get("last_error") or None) and
                    str(row.get("last_error"))[:160]}

        next_attempts = [(harness.row_for(rows, item.name) or {}).get("next_attempt_at")
                         for item in goods]
        delays = [value - time.time() for value in next_attempts
                  if isinstance(value, (int, float))]
        leased_good = sum(1 for item in goods
                          if (harness.row_for(rows, item.name) or {}).get("lease_owner")
                          and (harness.row_for(rows, item.name) or {}).get("state")
                          == "pending")
        report = {
            "finding": f"poison row ({args.variant})", "checkout": args.checkout, **tally,
            "extra": {
                "good_posted": len(goods),
                "good_delivered_within_wait": within,
                "wait_seconds": args.wait,
                "good_delivery_seconds_max": round(waits[-1], 2) if waits else None,
                "good_left_leased_pending": leased_good,
                "good_next_attempt_in_days_max": round(max(delays) / 86400, 1)
                if delays else None,
                "anonymousId_None_messages": len(bad_ids),
                "bad_id_examples": [{"type": m.get("type"), "event": m.get("event"),
                                     "anonymousId": m.get("anonymousId")}
                                    for m in bad_ids[:3]],
                "phone_captured": fate("phone", poison_answer),
                "participant_added": fate("participant", participant_answer),
                "log_errors": harness.error_lines(run.service.log_text()),
            },
        }
        # The two poison webhooks are counted apart: they may rightly end as dead letters.
        report["posted"] = len(goods) + 2
        report["answered"] = harness.answered(
            [item.answer for item in goods if item.answer] + [poison_answer, participant_answer])
        report["bug"] = bool(within < len(goods) or bad_ids or tally["lost"]
                             or tally["five_xx"])
    finally:
        run.close()
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
