"""Structured logs: one JSON line per event, with secrets scrubbed out.

Request bodies are never logged; the redaction filter is the second line of defence for
the verification token, write keys and access tokens.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replace any configured secret value that appears in a log record."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        """Remember more secret values to scrub (org tokens are added as orgs install)."""
        self.secrets.update(secret for secret in secrets if len(secret) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str | dict | list):
                record.__dict__[key] = self._scrub(value)
        return True

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        return value


REDACTOR = RedactSecrets()


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
    if any(getattr(handler, "_drift_segment_source", False) for handler in root.handlers):
        return
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"levelname": "level", "asctime": "time"}))
    handler.addFilter(REDACTOR)
    handler._drift_segment_source = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
