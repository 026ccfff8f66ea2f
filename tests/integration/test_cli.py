"""The ``drift-segment-source`` commands operators use."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from drift_segment_source.app import make_delivery
from drift_segment_source.cli import main

from ..support.fake_segment import FakeSegment
from .conftest import FIXTURES, TOKEN, WRITE_KEY, AppFactory, webhook


@pytest.fixture
def env(database_url: str, segment: FakeSegment, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment the commands read: this test's database and fake Segment."""
    for name, value in {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                        "SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_HOST": segment.url,
                        "DRIFT_ACCESS_TOKEN": ""}.items():
        monkeypatch.setenv(name, value)
    return database_url


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


def test_config_masks_secrets_and_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "abcdefghijklmnopqrstuvwxyz123456")
    monkeypatch.delenv("DRIFT_VERIFICATION_TOKEN", raising=False)
    code, output = run("config")
    assert code == 0
    assert "abcdefghijklmnopqrstuvwxyz123456" not in output
    assert "SEGMENT_WRITE_KEY" in output and "ab…(32 chars)" in output
    assert "missing: DRIFT_VERIFICATION_TOKEN" in output


def test_config_says_dry_run_without_a_write_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    assert "DRY-RUN" in run("config")[1]


def test_translate_prints_the_exact_batch_of_a_fixture() -> None:
    case = FIXTURES / "new_conversation" / "seed_example.json"
    code, output = run("translate", str(case))
    assert code == 0
    printed = json.loads(output)
    expected = json.loads(case.with_name("seed_example.segment.json").read_text())
    assert printed["batch"] == expected


def test_translate_reports_invalid_files_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(webhook("new_conversation", {"id": "x"})))
    code, output = run("translate", str(bad))
    assert code == 1
    assert "contactId" in output


def test_deadletters_list_retry_purge(env: str, make_app: AppFactory,
                                      segment: FakeSegment) -> None:
    app = make_app(SEGMENT_HOST=segment.url)
    client = app.test_client()
    for n in (1, 2):
        client.post("/webhooks/drift", json=webhook("new_conversation",
                                                    {"id": n, "contactId": 10 + n}))
    segment.fail_next(3, status=400)  # the batch, then each half after the split
    make_delivery(app).run_round()
    code, output = run("deadletters", "list")
    assert code == 0 and "new_conversation" in output and "400" in output
    code, output = run("deadletters", "list", "--json")
    rows = [json.loads(line) for line in output.splitlines()]
    assert len(rows) == 2 and all("400" in row["last_error"] for row in rows)
    assert run("deadletters", "retry")[0] == 2, "ids or --all are required"
    code, output = run("deadletters", "retry", str(rows[0]["id"]))
    assert code == 0 and output.startswith("1 dead letter")
    make_delivery(app).run_round()
    assert len(segment.messages) == 1
    code, output = run("deadletters", "purge", "--all", "--yes")
    assert code == 0 and output.startswith("1 dead letter(s) deleted")
    assert run("deadletters", "list")[1].strip() == "no dead letters"


def test_quarantine_list_and_retry_after_a_fix(env: str, make_app: AppFactory,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    bad = webhook("new_conversation", {"id": 77, "contactId": 78, "createdAt": "yesterday"})
    assert app.test_client().post("/webhooks/drift", json=bad).status_code == 422
    code, output = run("quarantine", "list")
    assert code == 0 and "createdAt" in output
    [entry] = [json.loads(line) for line in run("quarantine", "list", "--json")[1].splitlines()]
    assert entry["errors"]["createdAt"]
    assert json.loads(run("quarantine", "retry", "--json")[1])["still_invalid"] == 1

    # A translator fix: here, the schema learns to accept (and ignore) that createdAt.
    from drift_segment_source.sources.drift.translators import TRANSLATORS
    from drift_segment_source.sources.drift.translators.fields import DriftSchema

    class Relaxed(DriftSchema):
        id = TRANSLATORS["new_conversation"].schema.fields["id"]
        contactId = TRANSLATORS["new_conversation"].schema.fields["contactId"]

    monkeypatch.setitem(TRANSLATORS, "new_conversation",
                        replace(TRANSLATORS["new_conversation"], schema=Relaxed()))
    assert json.loads(run("quarantine", "retry", "--json")[1]) == {
        "accepted": 1, "duplicate": 0, "still_invalid": 0}
    assert app.extensions["store"].counts() == {("new_conversation", "pending"): 1}
    assert run("quarantine", "list")[1].strip() == "quarantine is empty"


def test_doctor_checks_drift_token_and_segment_key(env: str, make_app: AppFactory,
                                                    segment: FakeSegment,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import responses

    make_app()
    monkeypatch.setenv("DRIFT_ACCESS_TOKEN", "drift-token-for-doctor")
    monkeypatch.setenv("DRIFT_API_URL", "https://drift.test")
    with responses.RequestsMock(passthru_prefixes=(segment.url,)) as drift:
        drift.get("https://drift.test/conversations/list", json={"data": []})
        code, output = run("doctor")
    assert code == 0, output
    assert "ok    Drift API token" in output and "ok    Segment" in output
    assert len(segment.batches) == 1 and segment.batches[0]["batch"] == []
    segment.fail_next(1, status=401)
    with responses.RequestsMock(passthru_prefixes=(segment.url,)) as drift:
        drift.get("https://drift.test/conversations/list", status=403)
        code, output = run("doctor")
    assert code == 1
    assert "token lacks conversation_read" in output
    assert f"FAIL  Segment: {segment.url}: Segment 401" in output
