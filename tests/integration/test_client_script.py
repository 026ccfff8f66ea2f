"""The client-side script ``GET /drift-segment.js`` (docs/client-script.md): its HTTP caching.

What it does in a real browser is a system test (tests/system/test_client_script_in_a_browser.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from drift_segment_source import __version__, create_app

from .conftest import ROOT, TOKEN

SCRIPT = ROOT / "drift_segment_source" / "static" / "drift-segment.js"
CONTENT_HASH = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]

@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """The service on a throwaway SQLite store; the script needs nothing else."""
    service = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
                          "DRIFT_VERIFICATION_TOKEN": TOKEN})
    yield service
    service.extensions["store"].close()


# --- HTTP: what every browser and cache in between is told --------------------------------


def test_script_is_served_as_utf8_javascript(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert answer.data == SCRIPT.read_bytes()


def test_version_header_is_the_package_version_and_content_hash(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js")
    assert answer.headers["X-Drift-Segment-Version"] == f"{__version__}+{CONTENT_HASH}"


def test_plain_url_is_cached_for_an_hour(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js")
    assert answer.headers["Cache-Control"] == "public, max-age=3600"


def test_etag_is_the_content_hash_and_a_match_answers_304(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/drift-segment.js")
    assert first.headers["ETag"] == f'"{CONTENT_HASH}"'
    again = client.get("/drift-segment.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]


def test_another_etag_gets_the_whole_script(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js", headers={"If-None-Match": '"0ld"'})
    assert answer.status_code == 200
    assert answer.data == SCRIPT.read_bytes()


def test_versioned_url_is_cached_for_a_year_as_immutable(app: Flask) -> None:
    client = app.test_client()
    answer = client.get(f"/drift-segment.js?v={CONTENT_HASH}")
    assert answer.status_code == 200
    assert answer.data == SCRIPT.read_bytes()
    assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    again = client.get(f"/drift-segment.js?v={CONTENT_HASH}",
                       headers={"If-None-Match": f'"{CONTENT_HASH}"'})
    assert again.status_code == 304
    assert again.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_stale_version_gets_the_current_script_with_the_short_cache(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js?v=0123456789abcdef")
    assert answer.status_code == 200
    assert answer.data == SCRIPT.read_bytes()
    assert answer.headers["Cache-Control"] == "public, max-age=3600"


def test_other_origins_may_load_and_pin_the_script(app: Flask) -> None:
    answer = app.test_client().get("/drift-segment.js")
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_script_never_writes_to_the_console() -> None:
    assert "console" not in SCRIPT.read_text()
