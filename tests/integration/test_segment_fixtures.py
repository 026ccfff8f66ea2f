"""Every Segment fixture, through the real endpoint and delivery loop, makes its exact Drift
API calls (docs/segment-to-drift.md) against a stateful fake Drift on 127.0.0.1.

Cases are data: ``fixtures/segment/<type>/<case>.json`` (the Segment message, as Segment's
Webhooks destination sends it) beside ``<case>.drift.json``: ``contacts`` the fake Drift
holds before, ``calls`` the requests the service must make, in order, each with the fake's
answer, and optionally ``externalIdSearch: "case_insensitive"`` (Drift's search matches
externalIds regardless of case). Select with ``-k``, e.g.
``pytest tests/test_segment_fixtures.py -k group``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drift_segment_source.app import make_delivery
from drift_segment_source.sources.segment.translators import SEGMENT_TRANSLATORS

from ..support.fake_drift import FakeDrift
from ..support.webhooks import DRIFT_TOKEN, SECRET, headers
from .conftest import ROOT, AppFactory

FIXTURES = ROOT / "fixtures" / "segment"
CASES = sorted(path for path in FIXTURES.glob("*/*.json")
               if not path.name.endswith(".drift.json"))


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(token=DRIFT_TOKEN) as fake:
        yield fake


def test_there_is_a_fixture_folder_for_every_segment_call_type() -> None:
    assert {path.parent.name for path in CASES} == set(SEGMENT_TRANSLATORS)


def test_every_case_has_its_drift_calls() -> None:
    assert all(case.with_name(case.stem + ".drift.json").exists() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.stem}")
def test_fixture_makes_its_exact_drift_calls(case: Path, make_app: AppFactory, fixed_clock: Any,
                                             drift: FakeDrift) -> None:
    expected = json.loads(case.with_name(case.stem + ".drift.json").read_text())
    for contact in expected["contacts"]:
        drift.add_contact(contact)
    drift.case_insensitive_search = expected.get("externalIdSearch") == "case_insensitive"
    app = make_app(CLOCK=fixed_clock, SEGMENT_SHARED_SECRET=SECRET, DRIFT_API_URL=drift.url)
    body = case.read_bytes()

    answer = app.test_client().post("/webhooks/segment", data=body, headers=headers(body))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "accepted"
    assert drift.calls == []  # nothing reaches Drift before delivery
    assert make_delivery(app).run_round() == 1

    assert drift.calls == expected["calls"]
    assert app.extensions["store"].counts() == {(f"segment:{case.parent.name}", "delivered"): 1}
