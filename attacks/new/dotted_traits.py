"""contact_updated: dotted attribute names become nested traits AFTER the door's checks, so a
small webhook is answered `accepted` and then dead-lettered.

The door refuses JSON nested over 32 levels and only translates webhooks over 10,000 bytes
to measure their Segment message (intake.ALWAYS_FITS_BYTES: "each field at most three times
its UTF-8 size"). But contact_updated turns `attributes.a.a.a...` into {"a": {"a": ...}}:
  (1) one diff entry named "attributes." + "a."*600 (1.2 KB webhook) makes a trait nested
      600 deep: the Segment library's clean() recursion fails (RecursionError is a
      RuntimeError, which MessageBuilder takes for "over 32 KB");
  (2) twelve entries each nested 390 deep (a 9.6 KB webhook, under 10,000 bytes so never
      measured at the door): every "a." (2 bytes) becomes '{"a": ' + '}' (7 bytes), 3.5x,
      so the message really is over 32 KB.
Both are answered 200 accepted and end as dead letters; nothing reaches Segment.

    .venv/bin/python attacks/new/dotted_traits.py
"""

from __future__ import annotations

import json
from collections import Counter

import common
from common import ORG, webhook


def main() -> None:
    args = common.arguments(__doc__)
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-dotted-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url))
    cases = {
        "deep_600": [{"name": "attributes." + "a." * 599 + "a", "updated": "x"}],
        "wide_12x390": [{"name": f"attributes.k{i}." + "a." * 389 + "a", "updated": "x"}
                        for i in range(12)],
        "control_plain": [{"name": "attributes.email", "updated": "c@example.com"}],
    }
    results = {}
    for n, (name, diff) in enumerate(cases.items()):
        body = webhook("contact_updated", {"endUserId": 46_500_000_000 + n, "orgId": ORG,
                                           "diff": diff})
        status, answer = svc.post(body)
        results[name] = {"webhook_bytes": len(json.dumps(body)),
                         "answer": f"{status} {answer.get('status') or answer.get('error')}",
                         "id": answer.get("id")}
    svc.deliver()
    stored = {r["id"]: r for r in common.rows(url)}
    sent = Counter(m.get("anonymousId") for _, m in segment.messages())
    for n, result in enumerate(results.values()):
        row = stored.get(result["id"]) or {}
        result.update(stored_payload_bytes=len((row.get("payload") or "").encode()),
                      state=row.get("state"), reason=row.get("last_error"),
                      reached_segment=sent.get(str(46_500_000_000 + n), 0) > 0)
    lost = [name for name, r in results.items()
            if r["answer"] == "200 accepted" and not r["reached_segment"]]
    report = {"cases": results, "accepted_then_dead": lost, "lost": len(lost),
              "bug": bool(lost)}
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
