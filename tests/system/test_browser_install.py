"""The install flow as an org admin lives it, in a real headless Chromium against the real
service (``serve`` in app mode).

Landing page → Install → Drift's authorize page (loopback fake) → the write-key page →
Drift's integration settings; then a webhook for that org reaches Segment (loopback fake)
with the org's write key. Screenshots of each page go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support.browser import chromium, screenshot
from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from ..support.service import Service, wait_for
from .conftest import StartService, service_env

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "drift"
CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-0123456789"
SECRET_KEY = "test-secret-key-for-app-mode-0123456789"
WRITE_KEY_A = "AAAAwriteKeyOrgA0123456789abcdef"
ORG_A = 5000883


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile."""
    with chromium(tmp_path / "profile") as driver:
        yield driver


@pytest.fixture
def drift() -> Iterator[FakeDrift]:
    """Drift's OAuth pages and token endpoint."""
    with FakeDrift(CLIENT_ID, CLIENT_SECRET) as fake:
        yield fake


@pytest.fixture
def service(start_service: StartService, tmp_path: Path, drift: FakeDrift,
            segment: FakeSegment) -> Service:
    """The service in app mode, both regions on the fake Segment."""
    return start_service(service_env(
        f"sqlite:///{tmp_path / 'store.sqlite3'}", DRIFT_CLIENT_ID=CLIENT_ID,
        DRIFT_CLIENT_SECRET=CLIENT_SECRET, SECRET_KEY=SECRET_KEY, DRIFT_API_URL=drift.url,
        DRIFT_AUTHORIZE_URL=drift.authorize_url, DRIFT_SETTINGS_URL=drift.settings_url,
        SEGMENT_HOST=segment.url, SEGMENT_EU_HOST=segment.url))


def test_admin_installs_the_app_in_a_browser_and_events_use_the_org_key(
        browser: Any, service: Service, drift: FakeDrift, segment: FakeSegment) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    base_url = service.url
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
    webhook = json.loads((FIXTURES / "new_conversation" / "seed_example.json").read_text())
    answer = requests.post(base_url + "/webhooks/drift", timeout=10, json=webhook | {
        "orgId": ORG_A})
    assert answer.json()["status"] == "accepted"
    assert wait_for(lambda: len(segment.messages) == 1, 15), service.log()
    assert segment.write_keys() == {WRITE_KEY_A}
    assert [message["event"] for message in segment.messages] == [
        "Drift Source Event: new_conversation"]
