"""``drift-segment-source``: run, inspect and operate the service from a terminal.

One module per concern: ``running`` (serve, worker, migrate, config), ``payloads``
(translate, replay), ``doctor``, ``rows`` (dead letters, quarantine) and ``orgs`` (installed
orgs, backfill). Each registers its commands on ``main``.
"""

from __future__ import annotations

from . import doctor, orgs, payloads, rows, running
from .base import load_app, main

__all__ = ["doctor", "load_app", "main", "orgs", "payloads", "rows", "running"]
