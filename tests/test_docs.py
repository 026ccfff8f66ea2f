"""The documentation names what the code has: every setting, every metric."""

from __future__ import annotations

import re

from drift_segment_source.config import SETTINGS
from drift_segment_source.metrics import PREFIX

from .conftest import ROOT


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [setting.name for setting in SETTINGS if f"`{setting.name}`" not in readme]
    assert missing == []


def test_metrics_registry_lists_exactly_the_metrics_defined() -> None:
    registry = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(drift_segment_source_\w+)`", registry, re.MULTILINE))
    source = (ROOT / "drift_segment_source" / "metrics.py").read_text()
    defined = {PREFIX + name for name in re.findall(r'PREFIX \+ "(\w+)"', source)}
    assert len(defined) >= 9
    assert documented == defined
