"""Garbled answers from Drift that retrying would get past dead-letter the rows instead.

(1) App mode: the org's access token is about to expire, so the lookup renews it first
    (oauth_client.DriftOAuth.refresh). The token endpoint answers 200 with JSON nested
    5,000 deep (a broken proxy, a bad deploy): requests' response.json() raises
    RecursionError, which DriftOAuth._post does not catch (it catches ValueError only;
    drift_api._answer was fixed for exactly this). The RecursionError leaves the lookup
    thread as the row's error and Outcomes.file() dead-letters it ("cannot translate").
(2) Self-hosted: GET /conversations/{id} answers 429 with `Retry-After: ²` (latin-1 0xB2):
    str.isdigit() is True for "²" but float("²") raises ValueError in DriftApi._answer, so a
    rate-limit answer dead-letters the row instead of retrying it.
Each row is a participant event whose contact must be looked up; a second round shows the
next answer would have been good (the conversation is served normally afterwards).

    .venv/bin/python attacks/new/garbage_answers.py
"""

from __future__ import annotations

import json
import time
from typing import Any

import common
from common import webhook

ORG_APP = 7_100_001


def seconds_to_delivery(svc: common.InProcess, segment: Any, contact: int,
                        wait: float) -> float | None:
    """Run delivery rounds until `contact` reaches Segment (a retried row is due only after
    its backoff, so one deliver() right after recovery may find nothing to do)."""
    started = time.monotonic()
    while time.monotonic() - started < wait:
        svc.deliver()
        if any(m.get("anonymousId") == str(contact) for _, m in segment.messages()):
            return round(time.monotonic() - started, 2)
        time.sleep(0.25)
    return None


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument(
        "--recover-wait", type=float, default=30.0,
        help="seconds to keep delivering after the answers turn good"))
    bad = {"oauth": True, "retry_after": True}

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if path.startswith("/oauth2/token"):
            if bad["oauth"]:
                return 200, b"[" * 5000 + b"]" * 5000, 0.0
            return 200, json.dumps({"access_token": "fresh-token", "refresh_token": "r2",
                                    "expires_in": 7200}).encode(), 0.0
        conversation = path.split("?")[0].rsplit("/", 1)[-1]
        if conversation == "72" and bad["retry_after"]:
            return 429, b'{"error":"rate_limited"}', 0.0, b"Retry-After: \xb2\r\n"
        return 200, json.dumps({"data": {"id": int(conversation),
                                         "contactId": 47_100_000_000 + int(conversation)}}
                               ).encode(), 0.0

    drift = common.TrickleServer(plan)

    segment = common.harness.FakeSegment()
    results: dict[str, Any] = {}

    # (1) app mode
    url = args.database_url or common.sqlite_url("dss-new-garbage-app-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_WRITE_KEY=None, DRIFT_ACCESS_TOKEN=None,
        DRIFT_CLIENT_ID="client-id", DRIFT_CLIENT_SECRET="client-secret",
        SECRET_KEY="attack-secret-key-attack-secret-key"))
    from drift_segment_source.app_mode.oauth_client import TokenGrant
    directory = svc.app.extensions["routing"].directory
    directory.save_tokens(ORG_APP, TokenGrant("old-token", "refresh-1", 60.0, ORG_APP))
    common.save_write_key(directory, ORG_APP, common.harness.WRITE_KEY, segment.url)
    now_ms = int(time.time() * 1000)
    status, answer = svc.post(webhook("conversation_participant_added", {
        "conversationId": 71, "addedParticipants": [1], "changedAt": now_ms}, org_id=ORG_APP))
    svc.deliver()
    row = common.rows(url)[0]
    bad["oauth"] = False
    results["oauth_refresh_deep_json"] = {
        "answer": f"{status} {answer.get('status')}", "state": row["state"],
        "reason": row["last_error"],
        "delivered_seconds_after_the_endpoint_recovered": seconds_to_delivery(
            svc, segment, 47_100_000_071, args.recover_wait)}

    # (2) self-hosted, Retry-After "²" (the fake sends the raw byte 0xB2)
    url2 = common.sqlite_url("dss-new-garbage-self-")
    svc2 = common.InProcess(common.base_settings(url2, segment.url, drift.url))
    status, answer = svc2.post(webhook("conversation_participant_added", {
        "conversationId": 72, "addedParticipants": [1], "changedAt": now_ms}))
    svc2.deliver()
    row2 = common.rows(url2)[0]
    bad["retry_after"] = False
    results["drift_429_retry_after_superscript"] = {
        "answer": f"{status} {answer.get('status')}", "state": row2["state"],
        "reason": row2["last_error"],
        "delivered_seconds_after_drift_recovered": seconds_to_delivery(
            svc2, segment, 47_100_000_072, args.recover_wait)}
    report: dict[str, Any] = {"cases": results, "recover_wait_seconds": args.recover_wait}
    report["lost"] = sum(1 for r in results.values() if r["state"] == "dead")
    # Dead-lettered, or still not delivered `--recover-wait` s after the answers turned good.
    report["not_delivered_after_recovery"] = sum(
        1 for r in results.values()
        if next(v for k, v in r.items() if k.startswith("delivered_seconds")) is None)
    report["bug"] = report["lost"] > 0 or report["not_delivered_after_recovery"] > 0
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
