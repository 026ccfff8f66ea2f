"""A body in UTF-16 or UTF-32 slips a lone surrogate past the door's check: 500.

parse_json() looks for a lone-surrogate escape with a regex on the raw BYTES
(rb"\\u[dD][89a-fA-F]"), but json.loads() of bytes also auto-detects UTF-16 and UTF-32
(RFC 8259 wants UTF-8; Python accepts all three). In a UTF-16/32 body the escape's bytes are
interleaved with NULs, the regex never matches, lone_surrogate() is never run, and the
string "\\ud83d" reaches code that encodes it: the dedupe key (message_id() encodes the
identity as UTF-8) and the door's size check (payload.encode() for webhooks over 2,500
characters) raise UnicodeEncodeError, which nothing catches -> 500 (oddbodies.py's
"lone surrogate in new_meeting.eventId" 500, back by another door).

Each case is sent as UTF-8 (control: 400 invalid_unicode) and as UTF-16-LE, UTF-16 (BOM)
and UTF-32.

    .venv/bin/python attacks/new/utf16_surrogate.py
"""

from __future__ import annotations

import common


def main() -> None:
    args = common.arguments(__doc__)
    segment, drift = common.harness.FakeSegment(), common.harness.FakeDrift()
    url = args.database_url or common.sqlite_url("dss-new-utf16-")
    svc = common.InProcess(common.base_settings(url, segment.url, drift.url))
    token = common.TOKEN
    cases = {
        "surrogate_in_new_meeting_eventId":
            '{"type":"new_meeting","orgId":5000883,"token":"' + token
            + '","data":{"eventId":"evt\\ud83d","schedulerId":46000000001}}',
        "surrogate_in_unused_field_of_a_12KB_webhook":
            '{"type":"new_conversation","orgId":5000883,"token":"' + token
            + '","data":{"id":9300001,"contactId":46000000002,"note":"\\ud83d'
            + "x" * 12_000 + '"}}',
        "surrogate_in_unused_field_small":
            '{"type":"new_conversation","orgId":5000883,"token":"' + token
            + '","data":{"id":9300002,"contactId":46000000003,"note":"\\ud83d"}}',
    }
    results = {}
    five_xx = 0
    for name, text in cases.items():
        results[name] = {}
        for encoding in ("utf-8", "utf-16-le", "utf-16", "utf-32"):
            status, answer = svc.post(text.encode(encoding))
            results[name][encoding] = f"{status} {answer.get('status') or answer.get('error')}"
            five_xx += status >= 500
    report = {"cases": results, "five_xx": five_xx,
              "stored": common.harness.states(common.rows(url)), "bug": five_xx > 0}
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
