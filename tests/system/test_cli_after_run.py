"""The CLI in a second shell, right after ``scripts/run``: ``scripts/cli`` reads the settings
scripts/run wrote (``instance/local.env``), so ``replay`` of the repository's own fixtures
and ``doctor`` work as they are; ``translate`` answers lookups from the fixtures' recorded
Drift API answers; and no command prints warnings it was not asked for."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.paths import FIXTURES, ROOT
from ..support.service import Service

SCRIPT = ROOT / "scripts" / "cli"
# The receipt time the fixtures assume for events without a time of their own.
FIXTURES_RECEIVED_AT = "2024-04-29T20:00:00"


def webhook_files(folder: Path) -> list[Path]:
    """The webhooks of a fixture folder (not what they become, nor Drift's answers)."""
    return sorted(path for path in folder.rglob("*.json")
                  if not path.name.endswith((".segment.json", ".drift-api.json")))


def second_shell(instance: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``scripts/cli ARGS`` from the repository root, in a shell that has none of the
    service's settings: only what scripts/run left in the instance folder."""
    shell = {key: value for key, value in os.environ.items()
             if key not in ("DRIFT_VERIFICATION_TOKEN", "PORT", "DATABASE_URL",
                            "DRIFT_ACCESS_TOKEN", "SEGMENT_WRITE_KEY", "LOG_LEVEL",
                            "PROMETHEUS_MULTIPROC_DIR", "IDENTITY_STITCHING")}
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**shell, "INSTANCE_PATH": str(instance), **env}, timeout=120)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """The service as scripts/run starts it: a random verification token written to
    ``local.env`` in the instance folder, the default SQLite store there, dry-run."""
    instance = tmp_path / "instance"
    instance.mkdir()
    token = secrets.token_urlsafe(24)
    service = Service("serve", {"INSTANCE_PATH": str(instance), "DRIFT_VERIFICATION_TOKEN": token,
                                "WEB_CONCURRENCY": "1", "DATABASE_URL": "",
                                "DRIFT_ACCESS_TOKEN": "", "SEGMENT_WRITE_KEY": ""},
                      tmp_path / "service.log")
    (instance / "local.env").write_text(
        f"# written by scripts/run\nDRIFT_VERIFICATION_TOKEN={token}\nexport PORT={service.port}\n")
    try:
        service.wait_ready()
        yield service, instance
    finally:
        service.stop(timeout=30)


def test_replay_of_the_fixtures_and_doctor_work_in_a_second_shell(
        running: tuple[Service, Path]) -> None:
    service, instance = running
    done = second_shell(instance, "replay", "fixtures/drift")
    assert done.returncode == 0, done.stdout + done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(answers) <= {"accepted", "duplicate", "ignored"}
    assert sum(answers.values()) == len(webhook_files(FIXTURES))
    assert answers["accepted"] > 0
    assert '"level"' not in done.stderr  # no log lines, no warnings

    doctor = second_shell(instance, "doctor")
    database = instance / "drift-segment-source.sqlite3"
    assert doctor.stdout.splitlines()[0] == (f"data  SQLite file {database} (the default: "
                                             "DATABASE_URL is unset, INSTANCE_PATH set)")
    # Without a Drift token the events that need a lookup are held: doctor says so and fails.
    assert "WARN  " in doctor.stdout and "(no_drift_token): set DRIFT_ACCESS_TOKEN" in doctor.stdout
    assert doctor.returncode == 1
    assert doctor.stderr == ""


def test_a_refused_replay_says_which_token_to_set(running: tuple[Service, Path]) -> None:
    service, instance = running
    # A variable set in the shell wins over local.env: here, a stale token.
    done = second_shell(instance, "replay", "fixtures/drift/new_conversation",
                        DRIFT_VERIFICATION_TOKEN="an-old-token")
    assert done.returncode == 1
    cases = len(webhook_files(FIXTURES / "new_conversation"))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"unauthorized": cases}
    assert (f"{cases} refused with 401: send the service's own DRIFT_VERIFICATION_TOKEN: set it "
            "here too (scripts/cli reads instance/local.env, which scripts/run writes), or pass "
            "--token") in done.stderr


def test_replay_without_a_service_says_so_in_one_line(tmp_path: Path) -> None:
    done = second_shell(tmp_path, "replay", "fixtures/drift/new_conversation",
                        PORT="1")  # nothing listens on port 1
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "Error: cannot reach http://127.0.0.1:1/webhooks/drift: is the service running")


def printed_documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents ``translate`` printed one after another."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        found.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return found


@pytest.mark.parametrize("stitching", ["off", "external_id"])
def test_translate_answers_lookups_from_the_recorded_drift_answers(tmp_path: Path,
                                                                   stitching: str) -> None:
    recorded = sorted(FIXTURES.glob("*/*.drift-api.json"))
    cases = [path.with_name(path.name.replace(".drift-api.json", ".json")) for path in recorded]
    cases = [case for case in cases if case.stem.startswith("stitched_") == (stitching != "off")]
    assert cases
    done = second_shell(tmp_path, "translate", "--received-at", FIXTURES_RECEIVED_AT,
                        *[str(case.relative_to(ROOT)) for case in cases],
                        IDENTITY_STITCHING=stitching)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    printed = printed_documents(done.stdout)
    assert [document["file"] for document in printed] == [str(case.relative_to(ROOT))
                                                          for case in cases]
    for case, document in zip(cases, printed, strict=True):
        expected = json.loads(case.with_name(case.stem + ".segment.json").read_text())
        assert document["batch"] == expected, case


def test_commands_print_no_warnings_they_were_not_asked_for(tmp_path: Path) -> None:
    # Dry-run and no verification token: `config` and `doctor` say so; other commands do not.
    done = second_shell(tmp_path, "deadletters", "list")
    assert (done.returncode, done.stdout, done.stderr) == (0, "no dead letters\n", "")
