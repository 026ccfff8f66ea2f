"""The commands work for the Segment → Drift direction too: ``translate`` (the Drift actions
a Segment message becomes), ``replay --secret`` (signed), ``deadletters`` (the shared table)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from drift_segment_source.app import make_delivery
from drift_segment_source.cli import main

from ..support.fake_drift import FakeDrift
from ..support.webhooks import DRIFT_TOKEN, SECRET, headers, stringify
from .conftest import ROOT, TOKEN, AppFactory
from .live_server import serving

SEGMENT_FIXTURES = ROOT / "fixtures" / "segment"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(token=DRIFT_TOKEN) as fake:
        yield fake


def test_translate_prints_the_drift_actions_of_a_segment_message() -> None:
    code, output = run("translate", str(SEGMENT_FIXTURES / "identify" / "create_with_email.json"))
    assert code == 0, output
    assert json.loads(output)["drift"] == [{
        "action": "upsert_contact", "externalId": "user-8841", "email": "ada@example.com",
        "attributes": {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "enterprise",
                       "logins": 5}}]


def test_translate_reads_a_batch_and_says_what_is_ignored(tmp_path: Path) -> None:
    track = json.loads((SEGMENT_FIXTURES / "track" / "known_user.json").read_text())
    echoed = {**track, "integrations": {"Drift": False}}
    alias = {"type": "alias", "userId": "new", "previousId": "old"}
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([track, echoed, alias]))
    code, output = run("translate", str(batch))
    assert code == 0, output
    assert json.loads(output)["messages"] == [
        {"drift": [{"action": "timeline_event", "externalId": "user-8841",
                    "event": "Order Completed", "createdAt": 1714419600123}]},
        {"ignored": "integrations.Drift is false"},
        {"ignored": "alias is not relayed: Drift's API cannot merge two contacts"},
    ]


def test_translate_refuses_a_malformed_segment_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "track", "userId": "u"}))
    code, output = run("translate", str(bad))
    assert code == 1
    assert "event" in output


def test_replay_signs_segment_messages_with_the_secret(make_app: AppFactory) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET)
    cases = sorted(SEGMENT_FIXTURES.rglob("*.json"))
    messages = [case for case in cases if not case.name.endswith(".drift.json")]
    with serving(app) as url:
        target = url + "/webhooks/segment"
        code, output = run("replay", str(SEGMENT_FIXTURES), "--url", target)
        assert code == 1
        assert json.loads(output.splitlines()[-1]) == {"unauthorized": len(messages)}
        code, output = run("replay", str(SEGMENT_FIXTURES), "--url", target,
                           "--secret", f"{SECRET},older-secret")
        assert code == 0, output
        assert json.loads(output.splitlines()[-1]) == {"accepted": len(messages)}
        code, output = run("replay", str(SEGMENT_FIXTURES), "--url", target, "--secret", SECRET)
        assert json.loads(output.splitlines()[-1]) == {"duplicate": len(messages)}


def test_deadletters_lists_and_retries_segment_rows(make_app: AppFactory, database_url: str,
                                                    drift: FakeDrift,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url,
                   SEGMENT_UNKNOWN_USER_RETRY_MINUTES=0)
    body = (SEGMENT_FIXTURES / "track" / "known_user.json").read_bytes()
    app.test_client().post("/webhooks/segment", data=body, headers=headers(body))
    make_delivery(app).run_round()
    for name, value in {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                        "DRIFT_API_URL": drift.url}.items():
        monkeypatch.setenv(name, value)

    code, output = run("deadletters", "list", "--json")
    assert code == 0, output
    [dead] = [json.loads(line) for line in output.splitlines() if '"event_type"' in line]
    assert dead["event_type"] == "segment:track"
    assert dead["last_error"].startswith("Drift API 404: Drift has no contact with externalId "
                                         "'user-8841'")

    # The user exists now: the dead letter goes back, and is delivered.
    drift.add_contact({"id": 21760538950, "createdAt": 0,
                       "attributes": {"externalId": "user-8841"}})
    assert run("deadletters", "retry", "--all")[0] == 0
    make_delivery(app).run_round()
    assert app.extensions["store"].counts() == {("segment:track", "delivered"): 1}
    assert [event["event"] for event in drift.timeline] == ["Order Completed"]


def test_stringify_is_compact_json() -> None:
    assert stringify({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
