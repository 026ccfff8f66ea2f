"""A real headless Chromium, driven through chromedriver (Debian's ``chromium`` and
``chromium-driver``). Without them the browser tests are skipped with the reason, unless
``REQUIRE_BROWSER=1`` (CI), where they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def missing_browser() -> list[str]:
    """What this machine lacks to drive a real browser."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    return missing


@contextmanager
def chromium(profile: Path, record_console: bool = False) -> Iterator[Any]:
    """A headless Chromium with a fresh profile (its console recorded when asked)."""
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
                     "--window-size=1200,900", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    if record_console:
        # Every console message, down to console.debug: "no console output" means none.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> None:
    """Keep what the page looked like, for a person reviewing the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
