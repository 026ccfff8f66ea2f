"""Pages hold their content, in a real headless Chromium at 1280 and 800 px wide: long values
(the Segment → Drift webhook URL and shared secret, hosts, reasons) wrap inside their box,
nothing runs off screen, and values to paste elsewhere stay selectable (a Copy button with
JavaScript). The landing page's warning states are shown as an operator sees them.
Screenshots: ``test-artifacts/screenshots/pages-*.png``."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.delivery.breakers import segment_key
from drift_segment_source.store.refusals import DRIFT_WRONG

from ..support.browser import screenshot
from ..support.fake_drift import FakeDrift
from ..support.fake_segment import FakeSegment
from .app_mode import ORG_A, app_mode_settings
from .browser import overflows, viewport
from .conftest import WRITE_KEY, AppFactory, webhook
from .live_server import serving

WIDTHS = (1280, 800)
ADMIN = "admin-token-for-pages-0123456789"
# An operator's collector behind a long internal name: the host is shown, and must wrap.
LONG_HOST = ("https://segment-collector.analytics-proxy.eu-west-1.internal."
             "example-corporation-with-a-long-name.com:8443")



def test_the_setup_page_holds_the_webhook_url_and_the_shared_secret(
        browser: Any, make_app: AppFactory, drift: FakeDrift, segment: FakeSegment) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    app = make_app(**app_mode_settings(drift, segment))
    drift.authorizing_org = ORG_A
    with serving(app) as base_url:
        app.config["PUBLIC_URL"] = base_url
        browser.get(base_url + "/oauth/install")
        WebDriverWait(browser, 15).until(expected_conditions.title_contains("Authorize app"))
        browser.find_element(By.XPATH, "//button[normalize-space()='Authorize']").click()
        WebDriverWait(browser, 15).until(expected_conditions.url_to_be(base_url + "/setup"))
        secret = app.extensions["routing"].segment_secret(ORG_A)
        url = f"{base_url}/webhooks/segment/{ORG_A}"
        for width in WIDTHS:
            viewport(browser, width)
            browser.refresh()
            shown_url = browser.find_element(By.ID, "segment-url")
            shown_secret = browser.find_element(By.ID, "segment-secret")
            assert (shown_url.text, shown_secret.text) == (url, secret)
            browser.execute_script("arguments[0].scrollIntoView()", shown_url)
            screenshot(browser, f"pages-setup-{width}")
            assert overflows(browser) == [], width
            # Each value reads whole, and a Copy button (JavaScript on) stands by each.
            copy_buttons = browser.find_elements(By.CSS_SELECTOR, "button.copy")
            assert [button.is_displayed() for button in copy_buttons] == [True, True]
            assert shown_secret.value_of_css_property("user-select") == "all"
        copy_buttons[1].click()
        WebDriverWait(browser, 5).until(
            expected_conditions.text_to_be_present_in_element((By.CLASS_NAME, "copy-done"),
                                                              "Copied"))


def test_without_javascript_the_values_stay_whole_and_selectable(
        make_app: AppFactory, drift: FakeDrift, segment: FakeSegment) -> None:
    from .app_mode import install

    app = make_app(**app_mode_settings(drift, segment))
    client = app.test_client()
    install(client, drift, ORG_A)
    page = client.get("/setup").get_data(as_text=True)
    secret = app.extensions["routing"].segment_secret(ORG_A)
    assert f'<code class="value" id="segment-secret">{secret}</code>' in page
    # The buttons only appear when copy.js runs.
    assert page.count('data-copy="segment-') == 2 and page.count(" hidden>Copy</button>") == 2


def warning_states(app: Flask) -> None:
    """Put the service in every state that needs a person: held rows, an open circuit on a
    long host, dead letters, a quarantined payload, refused webhooks."""
    client = app.test_client()
    for number in range(8):
        client.post("/webhooks/drift", json=webhook("conversation_participant_added", {
            "conversationId": 70 + number, "changedAt": 1714422673598 + number,
            "addedParticipants": [1]}))
    client.post("/webhooks/drift", json=webhook("new_conversation", {"id": "not-a-number"}))
    make_delivery(app).run_round()
    store = app.extensions["store"]
    store.set_breaker(segment_key(LONG_HOST, WRITE_KEY), time.time() - 153)
    refusals = app.extensions["refusals"]
    for _ in range(42):
        refusals.count(DRIFT_WRONG)
    refusals.flush()


def test_the_landing_and_status_pages_hold_their_warnings(
        browser: Any, make_app: AppFactory) -> None:
    from selenium.webdriver.common.by import By

    app = make_app(SEGMENT_HOST=LONG_HOST, DRIFT_ACCESS_TOKEN="", ADMIN_TOKEN=ADMIN)
    warning_states(app)
    with serving(app) as base_url:
        for width in WIDTHS:
            viewport(browser, width)
            browser.get(base_url + "/")
            delivery = browser.find_element(By.ID, "delivery").text
            assert delivery.startswith(f"DELIVERY\nNot sending Segment at {LONG_HOST[:40]}")
            assert "Needs a person" in browser.find_element(By.ID, "backlog").text
            assert "Refusing some" in browser.find_element(By.ID, "intake").text
            items = browser.find_elements(By.CSS_SELECTOR, ".attention li")
            assert len(items) == 4  # held, circuit, quarantine, refused
            screenshot(browser, f"pages-landing-warnings-{width}")
            assert overflows(browser) == [], width

        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                                {"headers": {"Authorization": f"Bearer {ADMIN}"}})
        for width in WIDTHS:
            viewport(browser, width)
            browser.get(base_url + "/status")
            assert LONG_HOST in browser.find_element(By.ID, "circuits").text.replace("\n", "")
            screenshot(browser, f"pages-status-warnings-{width}")
            assert overflows(browser) == [], width
