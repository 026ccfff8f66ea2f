"""The client-side script ``GET /drift-segment.js`` (docs/client-script.md): its HTTP
caching, and what it does in a real headless Chromium.

The browser tests load pages from ``tests/browser_pages/`` on one loopback origin (the "site")
and the script from the service on another. The pages hold stand-ins for Segment's analytics.js
(records every call) and Drift's widget (emits ``fixtures/client/widget_events.json``); the
recorded calls must equal ``fixtures/client/expected_calls*.json``, with nothing on the browser
console. Screenshots go to ``test-artifacts/screenshots/client-script-<case>.png``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the browser tests are
skipped, unless ``REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, abort
from werkzeug.security import safe_join
from werkzeug.serving import make_server

from drift_segment_source import __version__, create_app

from .browser import CHROMEDRIVER, CHROMIUM, SCREENSHOTS, missing_browser
from .conftest import ROOT, TOKEN

SCRIPT = ROOT / "drift_segment_source" / "static" / "drift-segment.js"
PAGES = Path(__file__).resolve().parent / "browser_pages"
CLIENT_FIXTURES = ROOT / "fixtures" / "client"
CONTENT_HASH = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]

# page in tests/browser_pages → the golden calls it must produce
CASES = [
    ("segment-first", "expected_calls.json"),
    ("drift-first", "expected_calls.json"),
    ("script-first-opt-out", "expected_calls_no_anonymous_id.json"),
    ("included-twice", "expected_calls.json"),
    ("script-after-ready", "expected_calls.json"),
]


def client_fixture(name: str) -> Any:
    """A JSON file of ``fixtures/client/``."""
    return json.loads((CLIENT_FIXTURES / name).read_text())


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


# --- In a real browser ---------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile whose console is recorded."""
    missing = missing_browser()
    if missing:
        reason = f"no real browser here: missing {', '.join(missing)} " \
                 "(apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--window-size=1200,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    # Every console message, down to console.debug, so "no console output" means none at all.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def serving(wsgi_app: Flask) -> Iterator[str]:
    """Serve an app on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def site_app(service_url: str) -> Flask:
    """The site embedding the script: the test pages, pointed at the service's URL."""
    site = Flask("test_site", static_folder=None)

    @site.get("/<name>")
    def page(name: str) -> Response:
        path = safe_join(str(PAGES), name)
        if path is None or not os.path.isfile(path):
            abort(404)
        text = Path(path).read_text().replace("__SERVICE__", service_url)
        text = text.replace("__SCRIPT_HASH__", CONTENT_HASH)
        return Response(text, mimetype=mimetypes.guess_type(name)[0] or "text/plain")

    return site


@pytest.fixture
def site_url(app: Flask) -> Iterator[str]:
    """The service and the site on two loopback origins, as in production; the site's URL."""
    with serving(app) as service_url, serving(site_app(service_url)) as url:
        yield url


def recorded_calls(driver: Any) -> list[Any]:
    """The calls the analytics.js stand-in has recorded so far."""
    calls: list[Any] = driver.execute_script("return window.__calls || [];")
    return calls


def screenshot(driver: Any, case: str) -> None:
    """Keep what the page looked like, for a person reviewing the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"client-script-{case}.png"))


def open_page_with_drift_ready(driver: Any, url: str) -> None:
    """Load a page and wait until every script on it ran and the widget said ``ready``."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    # readyState "complete" comes after async scripts too: a second copy of the script has run.
    WebDriverWait(driver, 15).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && !!window.__fakeDrift"
        " && window.__fakeDrift.ready;"))


@pytest.mark.parametrize(("case", "golden"), CASES)
def test_widget_events_become_the_seeds_track_calls(
        case: str, golden: str, browser: Any, site_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    expected = client_fixture(golden)
    open_page_with_drift_ready(browser, f"{site_url}/{case}.html")
    if case == "script-after-ready":
        # The widget's `ready` is past: the script must see that and subscribe at once.
        browser.execute_script("window.addDriftSegmentScript();")
        WebDriverWait(browser, 15).until(
            lambda d: d.execute_script("return !!window.driftSegmentSource;"))
    browser.execute_script("window.__fakeDrift.emitAll(arguments[0]);",
                           client_fixture("widget_events.json"))
    if case == "drift-first":
        # Segment's snippet has not run yet: the script holds the calls and creates nothing.
        assert browser.execute_script("return typeof window.analytics;") == "undefined"
        browser.execute_script("window.addSegmentSnippet();")
    WebDriverWait(browser, 15).until(lambda d: len(recorded_calls(d)) >= len(expected))
    assert recorded_calls(browser) == expected
    screenshot(browser, case)
    assert browser.get_log("browser") == []


def test_console_output_on_a_test_page_would_be_seen(browser: Any, site_url: str) -> None:
    open_page_with_drift_ready(browser, f"{site_url}/segment-first.html")
    browser.get_log("browser")
    browser.execute_script("console.debug('probe from the test');")
    assert any("probe from the test" in entry["message"]
               for entry in browser.get_log("browser"))
