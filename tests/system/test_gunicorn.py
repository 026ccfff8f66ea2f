"""The real service under real gunicorn: webhooks delivered by workers made after fork.

The fork pitfall (docs/architecture.md#processes): a Segment client made in the gunicorn
master delivers nothing, silently. This runs ``drift-segment-source serve`` as users do and
watches a loopback fake Segment receive the messages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from ..support.fake_segment import FakeSegment
from ..support.service import wait_for
from ..support.webhooks import WRITE_KEY
from .conftest import StartService, service_env

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "drift"


def content(message: dict[str, Any]) -> str:
    """A Segment message without what depends on when it was received."""
    return json.dumps({key: value for key, value in message.items()
                       if key not in ("messageId", "timestamp")}, sort_keys=True)


def test_serve_delivers_webhooks_from_gunicorn_workers(start_service: StartService,
                                                       tmp_path: Path,
                                                       segment: FakeSegment) -> None:
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", segment,
                                        WEB_CONCURRENCY=2))
    try:
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
                        >= expected, 30), service.log()
        assert segment.write_keys() == {WRITE_KEY}
        # Rows are marked delivered just after Segment's 2xx: wait for the backlog to empty.
        assert wait_for(lambda: requests.get(service.url + "/readyz", timeout=5).json()[
            "checks"]["store"]["backlog"] == 0, 30), service.log()
        metrics = requests.get(service.url + "/metrics", timeout=5).text
        assert 'drift_segment_source_webhooks_total{outcome="accepted",type="new_conversation"}' \
            in metrics
        assert "drift_segment_source_backlog_webhooks 0.0" in metrics
    finally:
        status = service.stop()
    assert status == 0, service.log()
    assert "delivery loop stopped" in service.log_text()
