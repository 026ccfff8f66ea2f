"""Backfill stores what Drift's conversations and meetings imply, deduplicated with live."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from click.testing import CliRunner

from drift_segment_source.cli import main

from .conftest import DRIFT_API_URL, DRIFT_TOKEN, FIXTURES, TOKEN, AppFactory

SEED = json.loads((FIXTURES / "new_conversation" / "seed_example.json").read_text())
MEETING = json.loads((FIXTURES / "new_meeting" / "seed_example.json").read_text())


def conversation(conversation_id: int, created_at: int) -> dict[str, object]:
    return {**SEED["data"], "id": conversation_id, "createdAt": created_at}


def test_backfill_pages_conversations_and_meetings_and_dedupes_with_live(
        make_app: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"DATABASE_URL": database_url, "DRIFT_VERIFICATION_TOKEN": TOKEN,
                        "DRIFT_ACCESS_TOKEN": DRIFT_TOKEN, "DRIFT_API_URL": DRIFT_API_URL,
                        "SEGMENT_WRITE_KEY": ""}.items():
        monkeypatch.setenv(name, value)
    app = make_app()
    # The documented example conversation already came in live.
    assert app.test_client().post("/webhooks/drift", json=SEED).get_json()["status"] == \
        "accepted"
    since = 1714300000000
    pages = {
        None: {"data": [conversation(3969707799, 1714419999999), SEED["data"]],
               "pagination": {"more": True, "next": "cursor-2"}},
        "cursor-2": {"data": [conversation(3969700001, 1714300000001),
                              conversation(3969600000, since - 1)],
                     "pagination": {"more": True, "next": "cursor-3"}},
    }

    def page(request: responses.PreparedRequest) -> tuple[int, dict[str, str], str]:
        assert request.headers["Authorization"] == f"Bearer {DRIFT_TOKEN}"
        cursor = parse_qs(urlparse(request.url).query).get("next", [None])[0]
        return 200, {}, json.dumps(pages[cursor])

    with responses.RequestsMock() as drift:
        drift.add_callback(responses.GET, f"{DRIFT_API_URL}/conversations/list", callback=page)
        meetings = drift.get(f"{DRIFT_API_URL}/users/meetings/org",
                             json={"data": [MEETING["data"]]})
        result = CliRunner().invoke(main, ["backfill", "--since", "2024-04-28 10:26:40",
                                           "--until", "2024-05-01", "--org-id", "5000883"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1]) == {"accepted": 3, "duplicate": 1}
    query = parse_qs(urlparse(meetings.calls[0].request.url).query)
    assert query["min_start_time"] == [str(since)]
    counts = app.extensions["store"].counts()
    assert counts == {("new_conversation", "pending"): 3, ("new_meeting", "pending"): 1}
    # A later live webhook for a backfilled meeting is a duplicate: same identity.
    assert app.test_client().post("/webhooks/drift", json=MEETING).get_json() == {
        "status": "duplicate"}


def test_backfill_needs_a_drift_token(make_app: AppFactory, database_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DRIFT_ACCESS_TOKEN", "")
    result = CliRunner().invoke(main, ["backfill", "--since", "2024-04-28", "--org-id", "1"])
    assert result.exit_code != 0
    assert "DRIFT_ACCESS_TOKEN" in result.output
