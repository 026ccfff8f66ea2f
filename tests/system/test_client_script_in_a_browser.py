"""The client-side script ``GET /drift-segment.js``, served by the real service, in a real
headless Chromium (see docs/client-script.md).

The pages of ``tests/browser_pages/`` are served from one loopback origin (the "site") and
the script from the service on another. The pages hold stand-ins for Segment's analytics.js
(records every call) and Drift's widget (emits ``fixtures/client/widget_events.json``); the
recorded calls must equal ``fixtures/client/expected_calls*.json``, with nothing on the
browser console. Screenshots go to ``test-artifacts/screenshots/client-script-<case>.png``.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support.browser import chromium, screenshot
from ..support.loopback import serve
from ..support.service import Service
from .conftest import StartService, service_env

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "tests" / "browser_pages"
CLIENT_FIXTURES = ROOT / "fixtures" / "client"

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


@pytest.fixture(scope="module")
def service(start_module_service: StartService, module_folder: Path) -> Iterator[Service]:
    """The service whose script the pages load (nothing else is needed of it)."""
    yield start_module_service(service_env(f"sqlite:///{module_folder / 'store.sqlite3'}"))


class SitePages(SimpleHTTPRequestHandler):
    """The site embedding the script: the test pages, pointed at the service's URL."""

    service_url = ""
    script_hash = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """A page of tests/browser_pages with the service's URL and script hash filled in."""
        name = self.path.lstrip("/").split("?", 1)[0]
        path = PAGES / name
        if "/" in name or not path.is_file():
            self.send_error(404)
            return
        text = path.read_text().replace("__SERVICE__", self.service_url)
        body = text.replace("__SCRIPT_HASH__", self.script_hash).encode()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def site_url(service: Service) -> Iterator[str]:
    """The site, on its own loopback origin; its URL."""
    script = requests.get(service.url + "/drift-segment.js", timeout=10).content
    handler = type("Pages", (SitePages,), {
        "service_url": service.url,
        "script_hash": hashlib.sha256(script).hexdigest()[:16]})
    server, url, thread = serve(partial(handler, directory=str(PAGES)))  # type: ignore[arg-type]
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(module_folder: Path) -> Iterator[Any]:
    """A headless Chromium whose console is recorded (each test loads its own page and
    reads the console messages it caused)."""
    with chromium(module_folder / "profile", record_console=True) as driver:
        yield driver


def recorded_calls(driver: Any) -> list[Any]:
    """The calls the analytics.js stand-in has recorded so far."""
    calls: list[Any] = driver.execute_script("return window.__calls || [];")
    return calls


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
    browser.get_log("browser")  # what an earlier page said is not this page's
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
    screenshot(browser, f"client-script-{case}")
    assert browser.get_log("browser") == []


def test_console_output_on_a_test_page_would_be_seen(browser: Any, site_url: str) -> None:
    open_page_with_drift_ready(browser, f"{site_url}/segment-first.html")
    browser.get_log("browser")
    browser.execute_script("console.debug('probe from the test');")
    assert any("probe from the test" in entry["message"]
               for entry in browser.get_log("browser"))

