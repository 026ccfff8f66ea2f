"""Structured logs: one JSON line per event, with secrets scrubbed out.

Request bodies are never logged; scrubbing every finished line of every configured secret
(verification tokens, write keys, access tokens) is the second line of defence. The
formatter is written for the webhook hot path: one ``json.dumps`` and one regular
expression pass per line (a general-purpose JSON log formatter cost 100 µs a webhook).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class Redactor:
    """Replaces every known secret value in a line of text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        """Remember more secret values to scrub (org tokens are added as orgs install)."""
        with self._lock:
            fresh = {secret for secret in secrets if len(secret) >= 4} - self._secrets
            if not fresh:
                return
            self._secrets |= fresh
            # A secret may also appear JSON-escaped inside a line; match both spellings.
            spellings = self._secrets | {json.dumps(s)[1:-1] for s in self._secrets}
            longest_first = sorted(spellings, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, longest_first)))

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


REDACTOR = Redactor()


class JsonLines(logging.Formatter):
    """``{"time", "level", "name", "message", ...extra}`` as one JSON line, scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return REDACTOR.scrub(json.dumps(entry, default=str, ensure_ascii=False))


class StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test captures,
    gunicorn's redirections), not the stream that was current at start-up."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "INFO") -> None:
    """Send the service's logs to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("drift_segment_source")
    root.setLevel(level.upper())
    if any(isinstance(handler, StderrHandler) for handler in root.handlers):
        return
    handler = StderrHandler()
    handler.setFormatter(JsonLines())
    root.addHandler(handler)
    root.propagate = False
