"""Odd bodies: bodies the store or Segment cannot carry: 5xx answers, or "accepted" and then
dead-lettered.

Posts one webhook per case below (each with its own contact id), then a scan of
``new_conversation`` webhooks with an unused value nested ``--scan-from`` .. ``--scan-to``
deep (around Python's recursion limit), waits for delivery and reports each case's answer,
its row's final state and reason, and whether it reached Segment. The fake Segment is as
strict as the real one (standard JSON only, 32 KB per message).

    python attacks/oddbodies.py --checkout PATH [--scan-from 850 --scan-to 1000]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Sent, marker, webhook  # noqa: E402

SURROGATE = "\ud83d"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list_text(depth: int) -> str:
    return "[" * depth + "]" * depth


def conversation(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": 6_000_000 + n, "contactId": 45_000_000_000 + n,
            "createdAt": 1714419312425, "status": "open", "inboxId": 642330,
            "attackId": marker(f"c{n}"), **extra}


def cases() -> list[tuple[Sent, str]]:
    """(webhook, the documented answer for it)."""
    out: list[tuple[Sent, str]] = []

    def add(name: str, contact: int, body: Any, expect: str) -> None:
        # The Sent's name is the marker its body carries (c<n>, from the contact id).
        out.append((Sent(f"c{contact - 45_000_000_000}" if contact < 10**12 else "c13",
                         str(contact), body, name), expect))

    add("deep600_unused_field", 45_000_000_001,
        webhook("new_conversation", conversation(1, extra=nested(600))),
        "delivered, or 4xx naming the nesting limit")
    add("deep600_trait_value", 45_000_000_002,
        webhook("contact_updated", {"endUserId": 45_000_000_002, "timestamp": 1714419312425,
                                    "attackId": marker("c2"),
                                    "diff": [{"name": "attributes.deep", "previous": None,
                                              "updated": nested(600)}]}),
        "delivered, or 4xx naming the nesting limit")
    org_string = webhook("new_conversation", conversation(3))
    org_string["orgId"] = "1" * 5000
    add("orgId_5000_digit_string", 45_000_000_003, org_string, "400")
    org_number = json.dumps(webhook("new_conversation", conversation(4)))
    org_number = org_number.replace(str(harness.ORG), "1" * 5000, 1)
    add("orgId_5000_digit_number", 45_000_000_004, org_number, "400")
    add("orgId_max_int64", 45_000_000_005,
        webhook("new_conversation", conversation(5), org_id=2**63 - 1), "delivered")
    add("surrogate_in_identity_field", 45_000_000_006,
        webhook("new_meeting", {"eventId": "evt-" + SURROGATE, "schedulerId": 45_000_000_006,
                                "scheduledAt": 1714422076000, "slotStart": 1714482000000,
                                "attackId": marker("c6")}), "400")
    add("surrogate_in_invalid_data_422", 45_000_000_007,
        webhook("new_conversation", {"id": 6_000_007, "note": SURROGATE,
                                     "attackId": marker("c7")}), "400 or 422")
    add("surrogate_in_type", 45_000_000_008,
        webhook("new_" + SURROGATE, {"attackId": marker("c8")}), "200 ignored or 400")
    infinity = json.dumps(webhook("button_clicked", {
        "id": 6_000_009, "body": "Yes", "conversationId": 6_000_009,
        "author": {"id": 45_000_000_009, "type": "contact"}, "createdAt": 1714419312425,
        "attackId": marker("c9"),
        "context": {"location": {"city": "Paris", "latitude": "__INF__"}}}))
    add("latitude_1e400", 45_000_000_009, infinity.replace('"__INF__"', "1e400"),
        "delivered, or 400/422 naming the number")
    add("trait_value_40KB", 45_000_000_010,
        webhook("contact_updated", {"endUserId": 45_000_000_010, "timestamp": 1714419312425,
                                    "attackId": marker("c10"),
                                    "diff": [{"name": "attributes.notes", "previous": None,
                                              "updated": "x" * 40_000}]}),
        "delivered, or 4xx naming the limit")
    add("button_body_40KB", 45_000_000_011,
        webhook("button_clicked", {"id": 6_000_011, "body": "y" * 40_000,
                                   "conversationId": 6_000_011,
                                   "author": {"id": 45_000_000_011, "type": "contact"},
                                   "createdAt": 1714419312425, "attackId": marker("c11")}),
        "delivered, or 4xx naming the limit")
    add("trait_name_attributes_dot", 45_000_000_012,
        webhook("contact_updated", {"endUserId": 45_000_000_012, "timestamp": 1714419312425,
                                    "attackId": marker("c12"),
                                    "diff": [{"name": "attributes.", "previous": None,
                                              "updated": "x"},
                                             {"name": "attributes.plan", "previous": None,
                                              "updated": "pro"}]}),
        "delivered, or 422")
    add("contactId_10e30", 10**30,
        webhook("new_conversation", {"id": 6_000_013, "contactId": 10**30,
                                     "createdAt": 1714419312425, "attackId": marker("c13")}),
        "400/422 (documented: a number too big for a 64-bit id)")
    add("nul_in_string", 45_000_000_014,
        webhook("new_conversation", conversation(14, status="open\u0000")), "delivered")
    return out


def main() -> None:
    args = harness.arguments(__doc__, lambda parser: (
        parser.add_argument("--scan-from", type=int, default=850),
        parser.add_argument("--scan-to", type=int, default=1000),
        parser.add_argument("--wait", type=float, default=20.0)))
    run = harness.Run(args)
    report: dict[str, Any] = {}
    try:
        run.service.start()
        listed = cases()
        for item, _ in listed:
            item.answer = harness.post_one(run.service.url, item.body)
        # The depth scan: an unused value nested d deep (lists), total depth d + 2.
        scan: list[Sent] = []
        for depth in range(args.scan_from, args.scan_to + 1):
            n = 100_000 + depth
            text = json.dumps(webhook("new_conversation", conversation(n, extra="__DEEP__")))
            text = text.replace('"__DEEP__"', nested_list_text(depth))
            item = Sent(f"c{n}", str(45_000_000_000 + n), text, "depth_scan")
            item.answer = harness.post_one(run.service.url, text)
            scan.append(item)
        everything = [item for item, _ in listed] + scan
        accepted = [item for item in everything
                    if item.answer and item.answer.label == "200 accepted"]

        def settled() -> bool:
            rows = run.db.rows()
            seen = harness.delivered_ids(run.segment)
            return all(item.contact in seen or (harness.row_for(rows, item.name) or {}).get(
                "state") in ("dead", "delivered") for item in accepted)

        harness.wait_until(settled, args.wait, step=0.5)
        time.sleep(1.0)
        rows = run.db.rows()
        seen = harness.delivered_ids(run.segment)
        log = run.service.log_text()
        results = {}
        five_xx, accept_then_fail, should_refuse = [], [], []
        for item, expect in listed:
            row = harness.row_for(rows, item.name) or {}
            result = {"answer": item.answer.label if item.answer else None,
                      "state": row.get("state"),
                      "reason": (row.get("last_error") or None) and str(row["last_error"])[:120],
                      "delivered": item.contact in seen, "spec": expect}
            results[item.group] = result
            if item.answer and item.answer.status and item.answer.status >= 500:
                five_xx.append(item.group)
            if result["answer"] == "200 accepted" and not result["delivered"]:
                accept_then_fail.append(item.group)
            if item.group == "contactId_10e30" and result["answer"] == "200 accepted":
                should_refuse.append(item.group)
        scan_answers = harness.answered(item.answer for item in scan if item.answer)
        scan_5xx = [args.scan_from + i for i, item in enumerate(scan)
                    if item.answer and item.answer.status and item.answer.status >= 500]
        scan_lost = [args.scan_from + i for i, item in enumerate(scan)
                     if item.answer and item.answer.label == "200 accepted"
                     and item.contact not in seen]
        deepest_accepted = max((args.scan_from + i for i, item in enumerate(scan)
                                if item.answer and item.answer.label == "200 accepted"),
                               default=None)
        tally = harness.tally(everything, rows, run.segment)
        leaked = harness.log_mentions(log, [marker(item.name) for item in everything]
                                      + ["x" * 200, "y" * 200, "Hot lead"])
        report = {
            "finding": "odd bodies", "checkout": args.checkout, **tally,
            "extra": {
                "cases": results,
                "five_xx_cases": five_xx,
                "accepted_not_delivered_cases": accept_then_fail,
                "accepted_should_refuse": should_refuse,
                "depth_scan": {"depths": f"{args.scan_from}..{args.scan_to} (+2 envelope)",
                               "answers": scan_answers, "five_xx_depths": scan_5xx,
                               "accepted_not_delivered_depths": scan_lost,
                               "deepest_accepted": deepest_accepted},
                "log_leaks_body": len(leaked),
                "log_errors": harness.error_lines(log, limit=8),
            },
        }
        report["bug"] = bool(five_xx or accept_then_fail or scan_5xx or scan_lost
                             or tally["lost"] or leaked)
    finally:
        run.close()
    harness.finish(report)


if __name__ == "__main__":
    harness.guard(main)
