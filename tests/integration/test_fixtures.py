"""Every fixture webhook, through the real endpoint and delivery loop, gives its exact batch.

Cases are data: ``fixtures/drift/<event>/<case>.json`` with ``<case>.segment.json`` (the
batch Segment must receive) and optionally ``<case>.drift-api.json`` (Drift API answers).
Select with ``-k``, e.g. ``pytest tests/test_fixtures.py -k button_clicked``. Cases named
``stitched_*`` run with ``IDENTITY_STITCHING=external_id``; the others with it off (see
docs/event-mapping.md#identity-stitching).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import responses

from drift_segment_source.app import make_delivery

from .conftest import DRIFT_API_URL, FIXTURES, SEGMENT_HOST, WRITE_KEY, AppFactory

CASES = sorted(
    path for path in FIXTURES.glob("*/*.json")
    if not path.name.endswith((".segment.json", ".drift-api.json"))
)


def sibling(case: Path, suffix: str) -> Path:
    return case.with_name(case.name[: -len(".json")] + suffix)


def test_there_is_a_fixture_folder_for_every_translator() -> None:
    from drift_segment_source.sources.drift.translators import TRANSLATORS

    assert {path.parent.name for path in CASES} == set(TRANSLATORS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.stem}")
def test_fixture_produces_its_exact_segment_batch(
    case: Path, make_app: AppFactory, fixed_clock: Any
) -> None:
    expected = json.loads(sibling(case, ".segment.json").read_text())
    api_file = sibling(case, ".drift-api.json")
    drift_api = json.loads(api_file.read_text()) if api_file.exists() else {}
    stitching = "external_id" if case.stem.startswith("stitched_") else "off"
    app = make_app(CLOCK=fixed_clock, IDENTITY_STITCHING=stitching)
    received: list[dict[str, Any]] = []

    def segment(request: Any) -> tuple[int, dict[str, str], str]:
        received.append({"body": json.loads(request.body),
                         "auth": request.headers["Authorization"]})
        return 200, {}, '{"success": true}'

    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.add_callback(responses.POST, f"{SEGMENT_HOST}/v1/batch", callback=segment)
        for request_line, answer in drift_api.items():
            method, path = request_line.split(" ", 1)
            mock.add(method, DRIFT_API_URL + path, json=answer["json"], status=answer["status"])
        answer = app.test_client().post("/webhooks/drift", data=case.read_bytes(),
                                         content_type="application/json")
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["status"] == "accepted"
        assert make_delivery(app).run_round() == 1

    assert len(received) == 1
    assert received[0]["body"]["batch"] == expected
    assert received[0]["body"]["sentAt"]
    expected_auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert received[0]["auth"] == f"Basic {expected_auth}"
    assert app.extensions["store"].counts() == {(case.parent.name, "delivered"): 1}
