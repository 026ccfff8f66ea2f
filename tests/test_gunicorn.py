"""The real service under real gunicorn: webhooks delivered by workers made after fork.

REFERENCE.md's fork pitfall: a Segment client made in the gunicorn master delivers nothing,
silently. This runs ``drift-segment-source serve`` as users do and watches a loopback fake
Segment receive the messages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import FIXTURES, WRITE_KEY
from .support.fake_segment import FakeSegment
from .support.service import Service

pytestmark = pytest.mark.slow



def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def content(message: dict[str, Any]) -> str:
    """A Segment message without what depends on when it was received."""
    return json.dumps({key: value for key, value in message.items()
                       if key not in ("messageId", "timestamp")}, sort_keys=True)


def test_serve_delivers_webhooks_from_gunicorn_workers(tmp_path: Path,
                                                       segment: FakeSegment) -> None:
    service = Service("serve", {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": segment.url,
        "WEB_CONCURRENCY": "2",
    }, tmp_path / "service.log")
    try:
        service.wait_ready()
        cases = [path for path in sorted(FIXTURES.glob("*/*.json"))
                 if not path.name.endswith((".segment.json", ".drift-api.json"))
                 and not path.with_name(path.stem + ".drift-api.json").exists()
                 # identity stitching cases expect IDENTITY_STITCHING=external_id
                 and not path.stem.startswith("stitched_")]
        for case in cases:
            answer = requests.post(service.url + "/webhooks/drift", data=case.read_bytes(),
                                   headers={"Content-Type": "application/json"}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] in ("accepted", "duplicate")
        # Compared without messageId and timestamp: events without a time of their own are
        # identified by their receipt time, which here is the real clock's.
        expected = {content(json.loads(path.with_name(path.stem + ".segment.json").read_text(
            ))[0]) for path in cases}
        assert wait_for(lambda: {content(message) for message in segment.messages}
                        >= expected), service.log()
        assert segment.write_keys() == {WRITE_KEY}
        # Rows are marked delivered just after Segment's 2xx: wait for the backlog to empty.
        assert wait_for(lambda: requests.get(service.url + "/readyz", timeout=5).json()[
            "checks"]["store"]["backlog"] == 0), service.log()
        metrics = requests.get(service.url + "/metrics", timeout=5).text
        assert 'drift_segment_source_webhooks_total{outcome="accepted",type="new_conversation"}' \
            in metrics
        assert "drift_segment_source_backlog_webhooks 0.0" in metrics
    finally:
        status = service.stop()
    assert status == 0, service.log()
    assert "delivery loop stopped" in service.log()
