"""Structured logs: one JSON line per event, with secrets kept out by construction.

Request bodies are never logged. What could still carry a secret is redacted three ways, at
a cost per line that does not depend on how many orgs are installed:

- by field: an ``extra`` field named like a secret (``token``, ``write_key``,
  ``authorization``, ``password``…) is logged as ``[redacted]`` whatever its value;
- by shape, in the finished line: ``Bearer``/``Basic`` credentials, ``key=value`` or
  ``"key": "value"`` pairs whose key names a secret, Fernet tokens (what ``secrets_box``
  stores) and JWTs;
- by value: the few secrets configured in the environment (one small expression, built
  once), and every org secret decrypted in this process, looked up in a hash table by the
  long letter-and-digit words of the line, so 10,000 orgs cost what one does.

The formatter is written for the webhook hot path: one ``json.dumps`` and one regular
expression pass per line (a general-purpose JSON log formatter cost 100 µs a webhook).
"""

from __future__ import annotations

import functools
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

# An extra field (or a key inside one) whose name ends like these holds a secret.
SECRET_FIELD_ENDINGS = ("token", "secret", "password", "passwd", "write_key", "writekey",
                        "api_key", "apikey", "authorization", "cookie", "credentials")
# Org secrets are found by their letter-and-digit runs of at least this length: write keys
# have 20 or more, OAuth tokens more, and words this long are rare in log lines, so few
# words of a line are looked up at all.
SECRET_WORD_LENGTH = 16
# Org secrets remembered per process, least recently used forgotten first: 10,000 orgs
# hold about 30,000 live secrets; the rest is room for tokens rotated out.
MAX_ORG_SECRETS = 100_000

# Whole runs only (the lookbehind stops the engine retrying from inside a run), possessive
# (a run too short fails at once instead of backtracking).
SECRET_WORD = re.compile(f"(?<![A-Za-z0-9])[A-Za-z0-9]{{{SECRET_WORD_LENGTH},}}+")
# A secret written after its name or its scheme: ``Bearer …``, ``Basic …``, ``key=value``,
# ``key: value``, ``"key": "value"`` (also JSON-escaped inside a message). It runs on the
# lowercased line, where literal names let the engine skip ahead (a case-insensitive
# expression cost six times more), and only when one of the markers is in the line.
# JSON's true/false/null after such a name are flags, not secrets.
NAMED_MARKERS = ("bearer", "basic", "token", "secret", "passw", "write_key", "writekey",
                 "api_key", "apikey", "authorization")
NAMED = re.compile(
    # Literal names first, and no \b before them: the engine then skips ahead by the first
    # letters, three times faster than trying every position.
    r"(?:bearer|basic)\s+(?P<credential>[a-z0-9\-._~+/]{8,}=*)"
    r"|(?:token|secret|passw(?:or)?d|write_?key|api_?key|authorization)"
    r"(?P<separator>(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)(?:(?:bearer|basic)\s+)?"
    r"(?!(?:true|false|null)\b)(?P<value>[^\"'\s&,;}\\]{4,})")
# Prose, not a secret: "DRIFT_VERIFICATION_TOKEN: required", "HTTP Basic authentication".
# A plain word shorter than a secret word after a name and a colon (or after a scheme) is left
# as written; after ``=`` or inside quotes (``key=value``, JSON) a value is always a value.
# Secrets have digits, mixed case or length, and the configured ones are redacted by value
# whatever their shape.
PLAIN_WORD = re.compile(r"[A-Z]?[a-z]+[.!?):]*")
# Secrets recognisable by themselves: Fernet tokens (version byte 0x80, then a timestamp:
# the sealed form of every stored secret) and JWTs (base64url JSON header and payload).
SHAPED = (
    ("gAAAAA", re.compile(r"gAAAAA[A-Za-z0-9_\-]{20,}={0,2}")),
    ("eyJ", re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*")),
)


PLAIN_TYPES = frozenset({int, float, bool})


@functools.lru_cache(maxsize=1024)
def secret_field(name: str) -> bool:
    """The field name says its value is a secret (``access_token``, ``X-Write-Key``…)."""
    return name.lower().replace("-", "_").endswith(SECRET_FIELD_ENDINGS)


def redact_field(name: str, value: Any) -> Any:
    """``value`` as it may be logged under ``name``: secrets by name replaced, nested too."""
    if value is None or type(value) in PLAIN_TYPES:
        return value  # no secret is a number
    if secret_field(name):
        return REDACTED
    if isinstance(value, dict):
        return {key: redact_field(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_field(name, item) for item in value]
    return value


def redact_named(text: str, lowered: str) -> str:
    """``text`` with the values written after a secret's name or scheme redacted."""
    if len(lowered) != len(text):
        # A few non-ASCII letters change length when lowercased: no shared positions.
        lowered = "".join(char if len(char.lower()) > 1 else char.lower() for char in text)
    pieces = []
    end = 0
    for match in NAMED.finditer(lowered):
        group = "credential" if match.group("credential") is not None else "value"
        start = match.start(group)
        separator = match.group("separator") or ""
        if ("=" not in separator and "\"" not in separator and "'" not in separator
                and match.end() - start < SECRET_WORD_LENGTH
                and PLAIN_WORD.fullmatch(text, start, match.end())):
            continue
        pieces += [text[end:start], REDACTED]
        end = match.end()
    return "".join([*pieces, text[end:]]) if pieces else text


class Redactor:
    """Replaces secrets in a finished line: configured values, known shapes, org values."""

    def __init__(self) -> None:
        self._configured: tuple[str, ...] = ()
        # A dict as an ordered set: the least recently used org secret words come first.
        self._org_words: dict[str, None] = {}
        self._lock = threading.Lock()

    def add_configured(self, secrets: Iterable[str]) -> None:
        """Remember the environment's secrets: a handful, of any shape."""
        with self._lock:
            known = set(self._configured)
            fresh = {secret for secret in secrets if len(secret) >= 4}
            # A secret may also appear JSON-escaped inside a line; match both spellings.
            spellings = known | fresh | {json.dumps(secret)[1:-1] for secret in fresh}
            self._configured = tuple(sorted(spellings, key=len, reverse=True))

    def add(self, secrets: Iterable[str]) -> None:
        """Remember org secrets (tokens, write keys) as they are stored or decrypted."""
        words = self._org_words
        with self._lock:
            for secret in secrets:
                for word in SECRET_WORD.findall(secret):
                    # Seen again: most recently used, so the last to be forgotten.
                    words.pop(word, None)
                    words[word] = None
            while len(words) > MAX_ORG_SECRETS:
                del words[next(iter(words))]

    def scrub(self, text: str) -> str:
        """``text`` with every secret it holds replaced by ``[redacted]``."""
        for secret in self._configured:  # longest first, so no secret is left half-shown
            if secret in text:
                text = text.replace(secret, REDACTED)
        for marker, pattern in SHAPED:
            if marker in text:
                text = pattern.sub(REDACTED, text)
        lowered = text.lower()
        if any(marker in lowered for marker in NAMED_MARKERS):
            text = redact_named(text, lowered)
        words = self._org_words
        if not words:
            return text  # self-hosted: no org secrets, no words to look up
        for word in SECRET_WORD.findall(text):
            if word in words:
                return SECRET_WORD.sub(self._hide_org_word, text)
        return text

    def _hide_org_word(self, match: re.Match[str]) -> str:
        word = match.group()
        return REDACTED if word in self._org_words else word


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
                entry[key] = redact_field(key, value)
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
