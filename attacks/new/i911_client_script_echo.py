"""Loop guard bypass: the client-side companion script's own events come back into Drift.

GET /drift-segment.js (docs/client-script.md) calls analytics.track("Drift Source Event:
<widget event>", props) after analytics.setAnonymousId(<Drift contact id>) -- with no
`integrations` option and no `context.integration`. Segment's Webhooks destination forwards
that track to POST /webhooks/segment, whose loop guard (sources/segment/webhooks.py
loop_guard) only looks at context.integration.name and integrations.Drift/All. The event
passes, anonymousId is a Drift contact id, so delivery writes a Drift timeline event "Drift
Source Event: ..." on the contact: Drift's own widget events echoed back into Drift
(docs/segment-to-drift.md#loop-guard).

The message posted is the shape analytics.js gives such a call (the script's exact call).

    .venv/bin/python attacks/new/i911_client_script_echo.py
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import common

SECRET = "i911-shared-secret"


def main() -> None:
    args = common.arguments(__doc__)
    writes: list[tuple[str, str, bytes]] = []

    def plan(method: str, path: str, body: bytes) -> tuple[int, bytes, float]:
        writes.append((method, path, body))
        return 200, b'{"data":{}}', 0.0

    drift = common.TrickleServer(plan)
    segment = common.harness.FakeSegment()
    url = args.database_url or common.sqlite_url("dss-i911-echo-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url,
                                                SEGMENT_SHARED_SECRET=SECRET))
    script = svc.client.get("/drift-segment.js").get_data(as_text=True)
    prefix = re.search(r'EVENT_PREFIX\s*=\s*"([^"]+)"', script)
    event_prefix = prefix.group(1) if prefix else "Drift Source Event: "
    passes_options = "integrations" in script
    contact = "1234567890"
    # What analytics.js sends for analytics.track(EVENT_PREFIX + "conversation:started", {...})
    # after analytics.setAnonymousId(contact): library context, no integrations option.
    message = {"type": "track", "event": event_prefix + "conversation:started",
               "anonymousId": contact, "messageId": "ajs-next-1b2c3d",
               "properties": {"conversationId": 42, "contactId": contact},
               "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"},
                           "page": {"url": "https://example.com/"}},
               "integrations": {}, "timestamp": "2024-05-01T10:00:00.000Z"}
    body = json.dumps(message).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    answer = svc.client.post("/webhooks/segment", data=body, content_type="application/json",
                             headers={"X-Signature": signature})
    svc.deliver(rounds=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not writes:
        svc.deliver(rounds=2)
        time.sleep(0.2)
    echoed = [json.loads(b or b"{}") for m, p, b in writes if p.startswith("/contacts/timeline")]
    report = {
        "script_event_prefix": event_prefix,
        "script_passes_integrations_option": passes_options,
        "answer": answer.get_json(),
        "drift_timeline_writes": echoed,
        "bug": bool(echoed) or answer.get_json().get("status") == "accepted",
    }
    drift.close()
    segment.close()
    common.finish(report)


if __name__ == "__main__":
    main()
