"""The page tests' browser (tests/support/browser.py's headless Chromium) and the checks
they share: no element outside its box or the viewport; screenshots as test artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.browser import chromium

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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile (tests/support/browser.py)."""
    with chromium(tmp_path / "profile") as driver:
        yield driver


def viewport(driver: Any, width: int, height: int = 900) -> None:
    """Make the page exactly ``width`` CSS pixels wide, as a window of that size shows it."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def overflows(driver: Any) -> list[str]:
    """What sticks out on the page shown now (empty when everything holds)."""
    found: list[str] = driver.execute_script(OVERFLOWS)
    return found
