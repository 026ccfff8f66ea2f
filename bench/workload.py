"""The benchmark's workload: realistic Drift webhooks of all ten types, each one distinct.

Templates come from ``fixtures/drift/<type>/<case>.json`` (all ten types). One id of each
template (the one the translator's identity is built from) is replaced by the placeholder
``@ID@``; wrk's Lua script and the delivery seeding put a different number there for every
request, so every request is a new Drift event (a repeated one would only be a "duplicate").

Fixtures whose event needs a Drift API lookup (``GET /conversations/{id}``) are left out:
with a distinct conversation per request every lookup would miss the cache, and the
benchmark would measure a fake Drift API. Every type keeps at least one case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drift_segment_source.sources.door import parse_json
from drift_segment_source.sources.drift.envelope import read_envelope
from drift_segment_source.sources.drift.translators import (
    TRANSLATORS,
    dedupe_key,
    message_id,
    translate,
)
from drift_segment_source.sources.drift.translators.base import receipt_ms

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "drift"
PLACEHOLDER = "@ID@"
# Where the per-request id goes, first match wins: each is part of its type's identity.
VARIED_FIELDS = ("id", "conversationId", "endUserId", "eventId", "contactId")
RECEIVED = datetime(2024, 4, 29, 20, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Template:
    """One fixture with its varied id replaced by ``@ID@``."""

    event_type: str
    case: str
    text: str
    calls: int  # Segment messages one webhook of this case becomes

    def body(self, unique: str) -> str:
        """The webhook body for the digit string ``unique``."""
        return self.text.replace(PLACEHOLDER, unique)


def _candidates(document: dict[str, Any]) -> list[str]:
    """The document as JSON once per varied id it has (in ``data`` or ``data.data``)."""
    found = []
    for inner in (False, True):
        for name in VARIED_FIELDS:
            marked = json.loads(json.dumps(document))
            scope = marked["data"].get("data") if inner else marked["data"]
            value = scope.get(name) if isinstance(scope, dict) else None
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int):
                scope[name] = "@@INT@@"
            elif isinstance(value, str) and value.isdigit():
                scope[name] = PLACEHOLDER
            elif isinstance(value, str):
                scope[name] = f"{value}-{PLACEHOLDER}"
            else:
                continue
            text = json.dumps(marked, ensure_ascii=False, separators=(", ", ": "))
            found.append(text.replace('"@@INT@@"', PLACEHOLDER))
    return found


def stored_form(body: str, received_at: float | None = None
                ) -> tuple[str, int, str, str, list[str]]:
    """What the service stores for a body received at ``received_at`` (epoch seconds,
    default RECEIVED): (type, orgId, dedupe key, payload, identity).

    The same steps as ``intake.store_event``: envelope, schema, identity, dedupe key. Events
    without a time of their own take the receipt time into their identity.
    """
    envelope = read_envelope(parse_json(body.encode()))
    translator = TRANSLATORS[envelope.event_type]
    data = translator.validate(envelope.data)
    received = RECEIVED.timestamp() if received_at is None else received_at
    identity = list(translator.identity(data, receipt_ms(received)))
    key = dedupe_key(envelope.org_id, envelope.event_type, identity)
    return envelope.event_type, envelope.org_id, key, envelope.stored_payload, identity


def load_templates() -> list[Template]:
    """Every usable fixture as a template, checked to give distinct events per id."""
    templates = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.name.endswith((".segment.json", ".drift-api.json")):
            continue
        document = json.loads(path.read_text("utf-8"))
        translator = TRANSLATORS[document["type"]]
        if translator.conversation_needed(translator.validate(document["data"])) is not None:
            continue
        for text in _candidates(document):
            # The id must be part of the event's identity: two ids, two stored events.
            if stored_form(text.replace(PLACEHOLDER, "101"))[2] != stored_form(
                    text.replace(PLACEHOLDER, "102"))[2]:
                break
        else:
            raise SystemExit(f"{path}: none of {VARIED_FIELDS} makes a new Drift event")
        calls = _calls(text)
        templates.append(Template(document["type"], path.stem, text, calls))
    types = {template.event_type for template in templates}
    if types != set(TRANSLATORS):
        raise SystemExit(f"templates miss event types: {sorted(set(TRANSLATORS) - types)}")
    return templates


def _calls(text: str) -> int:
    envelope = read_envelope(parse_json(text.replace(PLACEHOLDER, "100").encode()))
    translator = TRANSLATORS[envelope.event_type]
    data = translator.validate(envelope.data)
    return len(translate(translator, envelope.org_id, data, RECEIVED))


def interleaved(templates: list[Template]) -> list[Template]:
    """An order where the ten types alternate and each type's cases take turns."""
    by_type: dict[str, list[Template]] = {}
    for template in templates:
        by_type.setdefault(template.event_type, []).append(template)
    rounds = 1
    for cases in by_type.values():
        rounds = rounds * len(cases) // _gcd(rounds, len(cases))
    return [cases[turn % len(cases)] for turn in range(rounds) for cases in by_type.values()]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def message_ids(event_type: str, org_id: int, identity: list[str], calls: int) -> list[str]:
    """The messageIds the service must send for one stored webhook."""
    return [message_id(org_id, event_type, identity, index) for index in range(calls)]
