"""A real headless Chromium for the page tests, driven through chromedriver, and the checks
they share: no element outside its box or the viewport, screenshots as test artifacts.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the tests are skipped,
unless ``REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

# Every element of the page's main content that sticks out of the viewport, out of its
# parent's box, or whose content overflows it (a value that neither wraps nor scrolls).
OVERFLOWS = """
const width = document.documentElement.clientWidth;
const found = [];
const name = (element) => element.tagName.toLowerCase()
  + (element.id ? "#" + element.id : "")
  + (element.className && typeof element.className === "string"
     ? "." + element.className.trim().split(/\\s+/).join(".") : "");
if (document.documentElement.scrollWidth > width) {
  found.push("the page scrolls sideways: " + document.documentElement.scrollWidth + " > " + width);
}
for (const element of document.querySelectorAll("main *")) {
  if (element.closest("svg")) { continue; }
  const style = getComputedStyle(element);
  const box = element.getBoundingClientRect();
  if (style.display === "none" || (box.width === 0 && box.height === 0)) { continue; }
  const text = (element.textContent || "").trim().slice(0, 40);
  if (box.left < -0.5 || box.right > width + 0.5) {
    found.push(name(element) + " leaves the viewport (" + Math.round(box.right) + " > "
               + width + "): " + text);
  }
  if (element.clientWidth > 0 && element.scrollWidth > element.clientWidth + 1
      && style.overflowX === "visible") {
    found.push(name(element) + " overflows its box (" + element.scrollWidth + " > "
               + element.clientWidth + "): " + text);
  }
  const parent = element.parentElement;
  if (parent && parent.tagName !== "MAIN") {
    const outer = parent.getBoundingClientRect();
    if (box.left < outer.left - 1 || box.right > outer.right + 1) {
      found.push(name(element) + " sticks out of " + name(parent) + ": " + text);
    }
  }
}
return found;
"""


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


def screenshot(driver: Any, name: str) -> None:
    """Save what the browser shows as ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def viewport(driver: Any, width: int, height: int = 900) -> None:
    """Make the page exactly ``width`` CSS pixels wide, as a window of that size shows it."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def overflows(driver: Any) -> list[str]:
    """What sticks out on the page shown now (empty when everything holds)."""
    found: list[str] = driver.execute_script(OVERFLOWS)
    return found
