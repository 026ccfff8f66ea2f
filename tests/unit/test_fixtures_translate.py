"""Every fixture, translated without a database or a network: each Drift webhook becomes its
exact Segment batch (``<case>.segment.json``), the Drift API's answers recorded beside it
(``<case>.drift-api.json``) answering its lookups, by the one path delivery and ``translate``
share; each Segment message makes its exact Drift API calls (``<case>.drift.json``), in
order. Through the real endpoint, store and delivery loop, the same fixtures run in
tests/integration/test_fixtures.py and test_segment_fixtures.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from drift_segment_source.cli.payloads import Translation
from drift_segment_source.config import load_settings
from drift_segment_source.destinations.drift import DriftWrites
from drift_segment_source.drift_api import Credentials, DriftApi
from drift_segment_source.sources.segment.translators import translate as drift_actions

from ..support.paths import FIXTURES, SEGMENT_FIXTURES

# The receipt time the fixtures assume for events without a time of their own.
FIXED_RECEIPT = datetime.fromtimestamp(1714420800.0, tz=UTC)
DRIFT_API_URL = "https://drift.test"
DRIFT_CASES = sorted(path for path in FIXTURES.glob("*/*.json")
                     if not path.name.endswith((".segment.json", ".drift-api.json")))
SEGMENT_CASES = sorted(path for path in SEGMENT_FIXTURES.glob("*/*.json")
                       if not path.name.endswith(".drift.json"))


def case_id(case: Path) -> str:
    return f"{case.parent.name}/{case.stem}"


@pytest.mark.parametrize("case", DRIFT_CASES, ids=case_id)
def test_every_drift_fixture_translates_to_its_exact_segment_batch(case: Path) -> None:
    stitching = "external_id" if case.stem.startswith("stitched_") else "off"
    settings = load_settings(environ={}, overrides={
        "IDENTITY_STITCHING": stitching, "DRIFT_API_URL": DRIFT_API_URL,
        "DRIFT_VERIFICATION_TOKEN": "unused"})
    shown = Translation(settings, FIXED_RECEIPT).drift_webhook(case, json.loads(
        case.read_text()))
    expected = json.loads(case.with_name(case.stem + ".segment.json").read_text())
    assert shown["batch"] == expected


class ScriptedDrift(BaseAdapter):
    """The Drift API as a fixture recorded it: each request must be the next one recorded,
    with the same body, and gets the recorded answer."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        super().__init__()
        self.expected = list(calls)
        self.made: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        url = request.url or ""
        made: dict[str, Any] = {"request": f"{request.method} {url[len(DRIFT_API_URL):]}"}
        if request.body:
            made["body"] = json.loads(request.body)
        self.made.append(made)
        recorded = self.expected[len(self.made) - 1] if len(self.made) <= len(
            self.expected) else {"status": 599, "answer": {"error": "not recorded"}}
        response = requests.Response()
        response.request, response.url = request, url
        response.status_code = int(recorded["status"])
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(recorded["answer"]).encode()
        return response

    def close(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("case", SEGMENT_CASES, ids=case_id)
def test_every_segment_fixture_makes_its_exact_drift_calls(case: Path) -> None:
    expected = json.loads(case.with_name(case.stem + ".drift.json").read_text())
    drift = ScriptedDrift(expected["calls"])
    session = requests.Session()
    session.mount("https://", drift)
    writes = DriftWrites(DriftApi(DRIFT_API_URL, 1.0, session=session))
    message = json.loads(case.read_text())
    received_ms = int(FIXED_RECEIPT.timestamp() * 1000)
    assert writes.apply(0, drift_actions(message, received_ms), Credentials("token")) is None
    expected_calls = [{key: call[key] for key in ("request", "body") if key in call}
                      for call in expected["calls"]]
    assert drift.made == expected_calls
