"""The install flow as an org admin lives it, in a real headless Chromium.

Landing page → Install → Drift's authorize page (loopback fake) → the write-key page →
Drift's integration settings; then a webhook for that org reaches Segment (loopback fake)
with the org's write key. Screenshots of each page go to ``test-artifacts/screenshots/``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the test is skipped,
unless ``REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from drift_segment_source.app import make_delivery

from .app_mode import (
    CLIENT_ID,
    CLIENT_SECRET,
    ORG_A,
    WRITE_KEY_A,
    app_mode_settings,
    events_by_write_key,
    webhook_file,
)
from .conftest import ROOT, AppFactory
from .support.fake_drift import FakeDrift
from .support.fake_segment import FakeSegment

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def missing_browser() -> list[str]:
    """What this machine lacks to drive a real browser."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    return missing


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, driven through chromedriver."""
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
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    with FakeDrift(CLIENT_ID, CLIENT_SECRET) as fake:
        yield fake



@pytest.fixture
def served_app(make_app: AppFactory, drift: FakeDrift, segment: FakeSegment
               ) -> Iterator[tuple[Flask, str]]:
    """The service in app mode as a real HTTP server on 127.0.0.1, and its base URL."""
    app = make_app(**app_mode_settings(drift, segment))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base_url = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_URL"] = base_url
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, base_url
    finally:
        server.shutdown()
        server.server_close()


def screenshot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_admin_installs_the_app_in_a_browser_and_events_use_the_org_key(
        browser: Any, served_app: tuple[Flask, str], drift: FakeDrift,
        segment: FakeSegment) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    app, base_url = served_app
    wait = WebDriverWait(browser, 15)
    drift.authorizing_org = ORG_A

    # The landing page: what the service is, its status, and the Install button.
    browser.get(base_url + "/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert browser.find_element(By.TAG_NAME, "main")
    install_button = browser.find_element(By.LINK_TEXT, "Install to Drift")
    # The stylesheet loaded under the page's CSP: the button has its brand colour.
    assert install_button.value_of_css_property("background-color") == "rgba(29, 78, 216, 1)"
    screenshot(browser, "01-landing")
    # Keyboard users: the first Tab lands on the skip link, with a visible focus ring.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.text == "Skip to content"
    assert focused.value_of_css_property("outline-style") == "solid"
    install_button.click()

    # Drift's authorize page (the fake), reached with our client id and a state.
    wait.until(expected_conditions.title_contains("Authorize app"))
    assert drift.authorize_requests[-1]["client_id"] == CLIENT_ID
    assert drift.authorize_requests[-1]["redirect_uri"] == base_url + "/oauth/callback"
    screenshot(browser, "02-drift-authorize")
    browser.find_element(By.XPATH, "//button[normalize-space()='Authorize']").click()

    # Back on the service: the write-key page for that org only.
    wait.until(expected_conditions.url_to_be(base_url + "/setup"))
    assert str(ORG_A) in browser.find_element(By.CLASS_NAME, "steps").text
    field = browser.find_element(By.ID, "write_key")
    assert browser.find_element(By.CSS_SELECTOR, "label[for='write_key']").text == \
        "Segment write key"
    screenshot(browser, "03-write-key-form")

    # A mistyped key is refused with the reason next to the field.
    field.send_keys("not a write key")
    browser.find_element(By.XPATH, "//button[@type='submit']").click()
    wait.until(expected_conditions.presence_of_element_located((By.CLASS_NAME,
                                                                 "error-summary")))
    assert browser.find_element(By.ID, "write_key").get_attribute("aria-invalid") == "true"
    screenshot(browser, "04-write-key-error")

    # The right key, US region, sends the admin back to Drift's integration settings.
    field = browser.find_element(By.ID, "write_key")
    field.clear()
    field.send_keys(WRITE_KEY_A)
    browser.find_element(By.ID, "region-us").click()
    screenshot(browser, "05-write-key-filled")
    browser.find_element(By.XPATH, "//button[@type='submit']").click()
    wait.until(expected_conditions.url_to_be(drift.settings_url))
    assert "Drift integration settings" in browser.find_element(By.TAG_NAME, "h1").text
    screenshot(browser, "06-drift-settings")

    # Going back to the write-key page: the session is done with, it is refused.
    browser.get(base_url + "/setup")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Your setup session has ended"
    screenshot(browser, "07-setup-session-ended")

    # A webhook for the org now reaches Segment with the org's own write key.
    answer = requests.post(base_url + "/webhooks/drift", timeout=10,
                           json=webhook_file("new_conversation", "seed_example", ORG_A))
    assert answer.json()["status"] == "accepted"
    assert make_delivery(app).run_round() == 1
    assert events_by_write_key(segment) == {
        WRITE_KEY_A: ["Drift Source Event: new_conversation"]}
