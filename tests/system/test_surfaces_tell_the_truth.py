"""Every surface an operator looks at first tells the same truth, through the real service:
the landing page, ``/readyz``, ``/status.json`` and ``doctor`` show held rows with their fix,
a Segment host that refuses connections, forget it once SEGMENT_HOST is fixed, and say when
webhooks are refused for a wrong token. Green only when nothing needs a person."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..support.fake_segment import FakeSegment
from ..support.service import Service
from ..support.webhooks import TOKEN, WRITE_KEY, distinct_webhooks, webhook
from .surfaces import ADMIN, doctor, landing, readyz, status_json, wait_for

FAILURES_TO_OPEN = 3  # a circuit opens after 3 failed posts in a row (docs/reliability.md)

SHARED_SECRET = "segment-shared-secret-0123456789"


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A small, quick self-hosted service on a SQLite file of this test."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "4",
        "ADMIN_TOKEN": ADMIN,
        "DRIFT_VERIFICATION_TOKEN": TOKEN,
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "DRIFT_ACCESS_TOKEN": "",
        "DRIFT_API_URL": f"http://127.0.0.1:{closed_port()}",
        "DELIVERY_POLL_SECONDS": "0.1",
        "DELIVERY_BACKOFF_SECONDS": "0.05",
        "DELIVERY_BACKOFF_MAX_SECONDS": "0.2",
        "SEGMENT_TIMEOUT_SECONDS": "2",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Services started by a test, stopped after it."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop(timeout=30)


def start(services: list[Service], env: dict[str, str], log: Path) -> Service:
    """``serve`` with these settings, once it answers."""
    service = Service("serve", env, log)
    services.append(service)
    service.wait_ready()
    return service


def needs_lookup(number: int) -> dict[str, object]:
    """A webhook whose contact only the Drift API knows (held without a Drift token)."""
    return webhook("conversation_participant_added", {
        "conversationId": 9000 + number, "changedAt": 1714422673598 + number,
        "addedParticipants": [1]})


def post(service: Service, bodies: list[dict[str, object]]) -> None:
    """Post webhooks with the right token; each must be accepted."""
    with requests.Session() as session:
        for body in bodies:
            answer = session.post(service.url + "/webhooks/drift", json=body, timeout=10)
            assert answer.json()["status"] == "accepted", answer.text


def test_all_well_is_green_everywhere_and_doctor_passes(
        tmp_path: Path, segment: FakeSegment, services: list[Service]) -> None:
    env = settings(tmp_path, SEGMENT_HOST=segment.url)
    service = start(services, env, tmp_path / "service.log")
    post(service, distinct_webhooks(3))
    assert wait_for(lambda: len(segment.messages) == 3), service.log()
    page = landing(service)
    assert page.tiles["delivery"].startswith("Live sending to Segment at http://127.0.0.1:")
    assert page.tiles["backlog"] == "Clear nothing waiting for delivery"
    assert page.tiles["intake"] == "Accepting none refused in the last hour"
    assert page.attention == []
    code, ready = readyz(service)
    assert (code, ready["status"], ready["warnings"]) == (200, "ready", [])
    assert status_json(service)["warnings"] == []
    code, output = doctor(env)
    assert code == 0, output
    assert "WARN" not in output


def test_held_rows_show_on_every_surface_with_the_fix(
        tmp_path: Path, segment: FakeSegment, services: list[Service]) -> None:
    env = settings(tmp_path, SEGMENT_HOST=segment.url)
    service = start(services, env, tmp_path / "service.log")
    post(service, [needs_lookup(number) for number in range(8)])
    assert wait_for(lambda: readyz(service)[1]["attention"]["held"] == 8), service.log()

    page = landing(service)
    assert "Clear" not in page.tiles["backlog"]
    assert page.tiles["backlog"].startswith("Needs a person 8 held (no_drift_token)")
    sentence = ("8 webhooks held (no_drift_token): set DRIFT_ACCESS_TOKEN to a Drift API token "
                "that can read conversations and restart; they are delivered then.")
    assert page.attention == [sentence]

    code, ready = readyz(service)
    assert (code, ready["status"]) == (200, "ready")  # it still takes webhooks
    assert ready["warnings"] == [sentence]
    assert ready["attention"]["held_by_reason"] == {"no_drift_token": 8}
    assert ready["checks"]["store"]["held"] == 8

    status = status_json(service)
    assert status["warnings"] == [sentence]
    assert status["attention"]["held"] == [{
        "reason": "no_drift_token", "count": 8,
        "fix": "set DRIFT_ACCESS_TOKEN to a Drift API token that can read conversations and "
               "restart; they are delivered then"}]

    code, output = doctor(env)
    assert code == 1
    assert "ok    store: reachable, schema current, 0 waiting for delivery, 8 held" in output
    assert f"WARN  {sentence}" in output.splitlines()


def test_a_segment_host_refusing_connections_then_fixed(
        tmp_path: Path, segment: FakeSegment, services: list[Service]) -> None:
    dead_host = f"http://127.0.0.1:{closed_port()}"
    env = settings(tmp_path, SEGMENT_HOST=dead_host)
    service = start(services, env, tmp_path / "outage.log")
    post(service, distinct_webhooks(27))
    assert wait_for(lambda: readyz(service)[1]["attention"]["open_circuits"]["segment"] == 1), \
        service.log()

    page = landing(service)
    assert "Live" not in page.tiles["delivery"]
    assert page.tiles["delivery"].startswith(f"Not sending Segment at {dead_host} is not "
                                             "answering (")
    assert page.tiles["delivery"].endswith("; 27 waiting")
    [warning] = page.attention
    assert warning.startswith(f"Segment at {dead_host} is not answering (circuit open for ")
    assert "check SEGMENT_HOST" in warning

    code, ready = readyz(service)
    assert (code, ready["warnings"]) == (200, [warning])
    assert ready["checks"]["circuits"] == {"ok": False, "open": 1, "segment": 1, "drift_api": 0}
    status = status_json(service)
    [circuit] = status["open_circuits"]
    assert (circuit["kind"], circuit["host"]) == ("segment", dead_host)
    code, output = doctor(env)
    assert code == 1
    assert f"WARN  {warning[:60]}" in output
    assert f"FAIL  Segment: {dead_host}: Segment network error" in output
    # The failed posts are logged with the host and the kind of error; the probes that
    # follow every few seconds are not (the open circuit is on every surface instead).
    logged = [json.loads(line) for line in service.log_path.read_text().splitlines()
              if line.startswith("{")]
    failed_posts = [line for line in logged if line["message"] == "segment post failed"]
    assert failed_posts and all(
        (line["level"], line["host"], line["error_kind"]) == ("WARNING", dead_host, "refused")
        for line in failed_posts)
    assert len(failed_posts) <= FAILURES_TO_OPEN
    service.stop(timeout=30)

    # The operator fixes SEGMENT_HOST and restarts: the backlog goes, the old host is forgotten.
    env = {**env, "SEGMENT_HOST": segment.url}
    service = start(services, env, tmp_path / "fixed.log")
    assert wait_for(lambda: len(segment.message_id_counts()) == 27), service.log()
    assert wait_for(lambda: readyz(service)[1]["attention"]["backlog"] == 0)
    code, ready = readyz(service)
    assert (code, ready["warnings"], ready["checks"]["circuits"]["open"]) == (200, [], 0)
    assert status_json(service)["open_circuits"] == []
    page = landing(service)
    assert page.tiles["delivery"].startswith("Live")
    assert page.tiles["backlog"] == "Clear nothing waiting for delivery"
    with sqlite3.connect(tmp_path / "store.sqlite3") as database:
        recorded = database.execute(
            "SELECT name FROM watermarks WHERE name LIKE 'breaker:%'").fetchall()
    assert recorded == []  # deleted when delivery started, not only hidden
    code, output = doctor(env)
    assert code == 0, output


def test_a_burst_of_wrong_tokens_is_counted_shown_and_logged_in_aggregate(
        tmp_path: Path, segment: FakeSegment, services: list[Service]) -> None:
    env = settings(tmp_path, SEGMENT_HOST=segment.url, SEGMENT_SHARED_SECRET=SHARED_SECRET)
    service = start(services, env, tmp_path / "service.log")
    body = webhook("new_conversation", {"id": 1, "contactId": 2}, token=None)
    with requests.Session() as session:
        for _ in range(40):
            answer = session.post(service.url + "/webhooks/drift", json=body, timeout=10,
                                  headers={"X-Verification-Token": "rotated-" + TOKEN})
            assert answer.status_code == 401
        for _ in range(5):
            assert session.post(service.url + "/webhooks/drift", json=body,
                                timeout=10).status_code == 401
        for _ in range(3):
            assert session.post(service.url + "/webhooks/segment", timeout=10,
                                json={"type": "identify", "userId": "u"},
                                headers={"X-Signature": "0" * 40}).status_code == 401
    assert wait_for(lambda: readyz(service)[1]["attention"]["refused_last_hour"] == 48), \
        service.log()

    code, ready = readyz(service)
    assert code == 200
    assert ready["attention"]["refused_by_reason"] == {
        "drift_missing_token": 5, "drift_wrong_token": 40, "segment_wrong_signature": 3}
    wrong = [warning for warning in ready["warnings"] if "wrong verification token" in warning]
    assert wrong == ["40 Drift webhooks refused for a wrong verification token in the last "
                     "hour: if Drift rotated its verification token, set "
                     "DRIFT_VERIFICATION_TOKEN to the new one (old and new, comma-separated, "
                     "during the change)."]
    assert len(ready["warnings"]) == 3
    page = landing(service)
    assert page.tiles["intake"] == ("Refusing some 48 refused for a wrong or missing token in "
                                    "the last hour")
    assert page.attention == ready["warnings"]
    assert status_json(service)["warnings"] == ready["warnings"]
    code, output = doctor(env)
    assert code == 1
    assert f"WARN  {wrong[0]}" in output.splitlines()

    # The log says it at WARNING, a line per reason and interval, never a line per request.
    logged = service.log_path.read_text().splitlines()
    lines = [json.loads(line) for line in logged if line.startswith("{")]
    refused = [line for line in lines if line["name"] == "drift_segment_source.refusals"]
    assert {line["level"] for line in refused} == {"WARNING"}
    assert sum(line["refused"] for line in refused if line["reason"] == "drift_wrong_token") == 40
    assert len(refused) <= 3 * 3  # three reasons, the burst spanning at most three intervals
    assert not [line for line in lines if line["message"] == "webhook unauthorized"]
