"""Where the repository's own files are, for the tests of every tier."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "drift"
SEGMENT_FIXTURES = ROOT / "fixtures" / "segment"
