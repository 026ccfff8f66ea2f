"""Identity stitching turns a long externalId into lost events (accepted, then dead).

A) A contact_identified webhook whose attributes.externalId is 17 KB (the site's
   drift.identify id; Drift sets no length limit we know of). The door (store/intake.py
   oversize) measures the messages WITHOUT stitching: 17 KB fits, `accepted`. At delivery,
   stitching (delivery/stitching.py Stitching.stitch) adds userId = the same 17 KB to the
   identify that already carries it as a trait: 34 KB > Segment's 32 KB -> MessageTooLarge
   -> dead letter. Promised: a webhook answered accepted is one that delivery can carry
   (docs/reliability.md#what-every-request-gets).
B) The externalId comes from GET /contacts/{id} (33 KB). Every event of that contact --
   here a small new_conversation -- gets userId = 33 KB and dies at delivery, while with
   IDENTITY_STITCHING=off the same event is delivered. Turning stitching on loses events.

    .venv/bin/python attacks/new/i911_stitch_huge_external_id.py
"""
from __future__ import annotations

import json
import time

import common
from common import webhook

CONTACT = 3_100_000_123


def run(args, stitching: str, label: str, big_lookup: str) -> dict:
    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if path.startswith("/contacts/"):
            return 200, json.dumps({"data": {"id": CONTACT, "attributes": {
                "externalId": big_lookup, "email": "u@example.com"}}}).encode(), 0.0
        return 404, b"{}", 0.0

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = common.sqlite_url(f"dss-i911-stitch-{label}-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                IDENTITY_STITCHING=stitching,
                                                DELIVERY_LOOKUP_WAIT_SECONDS=2))
    now_ms = int(time.time() * 1000)
    answers = {}
    # A: the externalId in the webhook itself (another contact, so B's lookup is separate).
    answers["A_contact_identified_17KB"] = svc.post(webhook("contact_identified", {
        "endUserId": CONTACT + 1, "timestamp": now_ms,
        "attributes": {"email": "a@example.com", "externalId": "u" * 17_000}}))[1]
    # B: a small event of a contact whose externalId Drift's API gives.
    answers["B_new_conversation"] = svc.post(webhook("new_conversation", {
        "id": 5_550_001, "contactId": CONTACT, "createdAt": now_ms, "status": "open"}))[1]
    for _ in range(10):
        svc.deliver(rounds=3)
        states = {r["id"]: r["state"] for r in common.rows(url)}
        if all(s in ("delivered", "dead") for s in states.values()):
            break
        time.sleep(0.3)
    stored = common.rows(url)
    out = {"answers": {k: v.get("status") for k, v in answers.items()},
           "states": {r["event_type"]: r["state"] for r in stored},
           "dead_reasons": [str(r["last_error"])[:90] for r in stored if r["state"] == "dead"],
           "segment_messages": len(segment.messages())}
    drift.close()
    segment.close()
    return out


def main() -> None:
    args = common.arguments(__doc__)
    big = "x" * 33_000
    off = run(args, "off", "off", big)
    on = run(args, "external_id", "on", big)
    lost = [event for event, state in on["states"].items() if state == "dead"]
    report = {"stitching_off": off, "stitching_external_id": on,
              "accepted_then_dead_with_stitching": lost,
              "bug": bool(lost)}
    common.finish(report)


if __name__ == "__main__":
    main()
