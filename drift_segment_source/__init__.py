"""drift-segment-source: Drift webhooks in, exact Segment calls out.

The path of a webhook, by folder: ``sources`` (the doors: receive, verify, validate) →
``store`` (stored before answered) → ``delivery`` (the engine) → ``destinations`` (Segment,
the Drift API). See docs/architecture.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("drift-segment-source")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.2.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None, **components: Any) -> Flask:
    """The WSGI app (see ``app.create_app``).

    Imported on call so that ``import drift_segment_source`` stays light: the gunicorn config
    must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is first imported.
    """
    from .app import create_app as factory

    return factory(config, **components)


__all__ = ["__version__", "create_app"]
