"""App mode on SQLite: concurrent lookups of one org refresh its OAuth token at the same time
with the same refresh token; Drift (which rotates refresh tokens) refuses the reuse, and the
org is marked "needs re-install": every webhook of the org is held until an admin re-installs.

OrgDirectory.renew_tokens() serialises renewals with SELECT ... FOR UPDATE, which SQLite
ignores; its docstring says "SQLite runs a single delivery loop and needs no lock", but that
loop now runs up to 8 Drift lookups at once in threads (lookups.py), each of which renews
the token when it is about to expire (renew_first) or on a 401.

Setup: org installed, access token expiring in 60 s (inside the 300 s renewal margin);
5 participant events for 5 conversations, each needing GET /conversations/{id}. The fake
Drift token endpoint takes 0.3 s and, like a rotating OAuth server, accepts each refresh
token once (a reused one gets 400 invalid_grant). `--lenient` accepts any refresh token
instead: then the losers' UPDATEs hit SQLite's stale-snapshot error.

    .venv/bin/python attacks/new/refresh_race.py [--lenient]
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import common
from common import webhook

ORG_APP = 7_200_001


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--lenient", action="store_true"))
    lock = threading.Lock()
    state = {"valid_refresh": "refresh-1", "issued": 0, "refresh_calls": 0, "refused": 0}

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        if path.startswith("/oauth2/token"):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            time.sleep(0.3)
            with lock:
                state["refresh_calls"] += 1
                if not args.lenient and form.get("refresh_token") != state["valid_refresh"]:
                    state["refused"] += 1
                    return 400, b'{"error":"invalid_grant"}', 0.0
                state["issued"] += 1
                state["valid_refresh"] = f"refresh-{state['issued'] + 1}"
                answer = {"access_token": f"token-{state['issued']}",
                          "refresh_token": state["valid_refresh"], "expires_in": 7200}
            return 200, json.dumps(answer).encode(), 0.0
        conversation = path.split("?")[0].rsplit("/", 1)[-1]
        return 200, json.dumps({"data": {"id": int(conversation),
                                         "contactId": 47_200_000_000 + int(conversation)}}
                               ).encode(), 0.0

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-new-refresh-race-")
    svc = common.InProcess(common.base_settings(
        url, segment.url, drift.url, SEGMENT_WRITE_KEY=None, DRIFT_ACCESS_TOKEN=None,
        DRIFT_CLIENT_ID="client-id", DRIFT_CLIENT_SECRET="client-secret",
        SECRET_KEY="attack-secret-key-attack-secret-key", DELIVERY_LOOKUP_WAIT_SECONDS=5))
    from drift_segment_source.app_mode.oauth_client import TokenGrant
    directory = svc.app.extensions["routing"].directory
    directory.save_tokens(ORG_APP, TokenGrant("token-0", "refresh-1", 60.0, ORG_APP))
    common.save_write_key(directory, ORG_APP, common.harness.WRITE_KEY, segment.url)
    now_ms = int(time.time() * 1000)
    for conversation in range(1, 6):
        svc.post(webhook("conversation_participant_added", {
            "conversationId": conversation, "addedParticipants": [1], "changedAt": now_ms},
            org_id=ORG_APP))
    svc.deliver(rounds=5)
    # A later webhook of the org that needs no lookup at all:
    directory.changed(ORG_APP)
    svc.post(webhook("new_conversation", {"id": 9_200_001, "contactId": 47_200_000_999,
                                          "createdAt": now_ms}, org_id=ORG_APP))
    svc.deliver(rounds=5)
    stored = common.rows(url)
    org = directory.get(ORG_APP)
    report: dict[str, Any] = {
        "drift_token_endpoint": ("lenient" if args.lenient
                                 else "rotating (refresh token single-use)"),
        "posted": 6, "answered": dict(Counter(svc.answers)),
        "refresh_calls": state["refresh_calls"], "refresh_refused_as_reused": state["refused"],
        "org_status_after": org.status if org else None,
        "stored": common.harness.states(stored),
        "row_outcomes": sorted(Counter(f"{r['state']}: {(r['last_error'] or '')[:90]}"
                                       for r in stored).items()),
        "delivered_messages": len(segment.messages()),
        "later_no_lookup_webhook_state": stored[-1]["state"],
    }
    report["bug"] = report["delivered_messages"] < 6
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
