"""A slow Drift API, in real processes: webhooks that need no lookup are delivered promptly,
and SIGTERM still finishes within gunicorn's graceful timeout, handing every row back
(SPEC §5.6, §5.8). Figures are saved in test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from .conftest import TOKEN, webhook
from .reliability import distinct_webhooks, post_concurrently, save_report, states
from .support.fake_drift import FakeDrift
from .support.fake_segment import FakeSegment
from .support.service import Service
from .test_reliability import service_env, wait_for

pytestmark = pytest.mark.slow

SLOW_SECONDS = 8.0
# gunicorn_conf.graceful_timeout. Not imported: importing that module points the
# multiprocess metrics of this whole test process at a folder of its own.
graceful_timeout = 25


def leased(database_url: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(*) FROM webhooks WHERE lease_owner IS NOT NULL")).scalar_one())
    finally:
        engine.dispose()


def lookup_webhooks(count: int) -> list[dict[str, object]]:
    """Participant events of ``count`` conversations the slow Drift API must be asked for."""
    return [webhook("conversation_participant_added", {
        "conversationId": 9_000 + n, "changedAt": 1714422673598, "addedParticipants": [1]})
        for n in range(count)]


def test_a_slow_drift_api_holds_up_nothing_and_sigterm_ends_in_time(
        database_url: str, segment: FakeSegment, tmp_path: Path) -> None:
    with FakeDrift() as drift:
        for n in range(5):
            drift.conversations[str(9_000 + n)] = {"id": 9_000 + n, "contactId": 77_000 + n}
            drift.delay[str(9_000 + n)] = SLOW_SECONDS
        env = service_env(database_url, segment, DRIFT_API_URL=drift.url,
                          DRIFT_ACCESS_TOKEN="drift-token", DRIFT_TIMEOUT_SECONDS="20")
        service = Service("serve", env, tmp_path / "first.log")
        service.wait_ready()
        for body in lookup_webhooks(5):
            requests.post(service.url + "/webhooks/drift", json=body, timeout=10,
                          headers={"X-Verification-Token": TOKEN})
        posted_at = time.monotonic()
        prompt = post_concurrently(service.url, distinct_webhooks(50))
        assert len(prompt.accepted) == 50
        assert wait_for(lambda: len(segment.messages) >= 50, SLOW_SECONDS - 2), service.log()
        prompt_seconds = time.monotonic() - posted_at

        # Lookups still hang; more webhooks arrive; then the platform stops the dyno.
        late = post_concurrently(service.url, distinct_webhooks(10, start=1000))
        started = time.monotonic()
        status = service.stop()
        stop_seconds = time.monotonic() - started
        left_leased = leased(database_url)

        restarted = Service("serve", env, tmp_path / "second.log")
        try:
            restarted.wait_ready()
            drift.delay.clear()
            assert wait_for(lambda: states(database_url) == {"delivered": 65}, 60), \
                (states(database_url), restarted.log())
        finally:
            restarted.stop()
    report = {"database": database_url.split(":")[0], "drift_delay_seconds": SLOW_SECONDS,
              "no_lookup_delivered_seconds": round(prompt_seconds, 2),
              "sigterm_exit_seconds": round(stop_seconds, 2),
              "graceful_timeout": graceful_timeout, "left_leased_after_exit": left_leased,
              "late_accepted": len(late.accepted), "final_states": states(database_url)}
    save_report(f"slow-drift-{report['database']}", report)
    assert status == 0
    assert stop_seconds < graceful_timeout
    assert left_leased == 0, "every in-flight row goes back to the store on SIGTERM"
