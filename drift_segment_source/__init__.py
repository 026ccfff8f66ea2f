"""drift-segment-source: Drift webhooks in, exact Segment calls out.

The path of a webhook, one module each: ``webhooks`` (receive) → ``verification`` →
``envelope`` → ``translators`` (validate) → ``store`` → ``delivery`` → ``segment_out``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drift-segment-source")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

from .app import create_app  # noqa: E402  (needs __version__ defined first)

__all__ = ["__version__", "create_app"]
