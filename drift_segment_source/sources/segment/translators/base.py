"""What every Segment translator shares: the Drift actions it returns and the reading of a
Segment message (who it is about, when it happened, its traits).

A translator is pure: a Segment message (the JSON object Segment's Webhooks destination
sends) and the receipt time go in; the Drift actions that apply it come out.
``destinations/drift.py`` turns the actions into Drift REST API calls (docs/segment-to-drift.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drift_segment_source.sources.drift.translators.base import is_contact_id

Message = Mapping[str, Any]
# Epoch values below this are seconds, at or above it milliseconds: 10^11 ms is March 1973,
# 10^11 s is the year 5138. Traits carry both (Segment's spec allows either for createdAt).
SECONDS_BELOW = 100_000_000_000


class NotASegmentMessage(ValueError):
    """The message lacks what every Segment call of its type has: answered 400."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field_name = field_name
        self.problem = problem


class NotRelayed(ValueError):
    """A sound Segment message that has no Drift equivalent: answered ``ignored``, with why."""


@dataclass(frozen=True)
class Upsert:
    """Set attributes on one contact: the contact whose ``externalId`` is ``external_id``
    (created with ``email`` when Drift has none and an email is known), or the contact
    ``contact_id``."""

    attributes: dict[str, Any]
    external_id: str | None = None
    contact_id: int | None = None
    email: str | None = None

    def describe(self) -> dict[str, Any]:
        """The action as JSON (``translate`` CLI, logs)."""
        return {"action": "upsert_contact", **_who(self.external_id, self.contact_id),
                **({"email": self.email} if self.email is not None else {}),
                "attributes": self.attributes}


@dataclass(frozen=True)
class Timeline:
    """Add the custom event ``event`` to a contact's timeline, at ``created_at_ms``."""

    event: str
    created_at_ms: int
    external_id: str | None = None
    contact_id: int | None = None

    def describe(self) -> dict[str, Any]:
        """The action as JSON (``translate`` CLI, logs)."""
        return {"action": "timeline_event", **_who(self.external_id, self.contact_id),
                "event": self.event, "createdAt": self.created_at_ms}


Action = Upsert | Timeline


def _who(external_id: str | None, contact_id: int | None) -> dict[str, Any]:
    return {"externalId": external_id} if external_id is not None else {"contactId": contact_id}


@dataclass(frozen=True)
class SegmentTranslator:
    """How one Segment call type becomes Drift actions: ``build(message, received_ms)``
    raises NotASegmentMessage (400) or NotRelayed (ignored)."""

    call_type: str
    build: Callable[[Message, int], list[Action]]


def id_text(value: Any) -> str | None:
    """An id as Drift's externalId takes it: a non-empty string, or a number's digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def user_id(message: Message) -> str | None:
    """The message's ``userId``, when it has one."""
    return id_text(message.get("userId"))


def contact_of(message: Message) -> tuple[str | None, int | None]:
    """(externalId, None) from ``userId``; else (None, contactId) when ``anonymousId`` is a
    Drift contact id (the client-side script sets it so); else NotRelayed."""
    found = user_id(message)
    if found is not None:
        return found, None
    anonymous_id = message.get("anonymousId")
    if isinstance(anonymous_id, int | str) and is_contact_id(anonymous_id):
        return None, int(anonymous_id)
    raise NotRelayed("no userId, and the anonymousId is not a Drift contact id: Drift has no "
                     "contact to put this on")


def object_field(message: Message, name: str) -> dict[str, Any]:
    """``traits`` or ``properties`` as a dict ({} when absent or null); 400 otherwise."""
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NotASegmentMessage(name, "must be a JSON object")
    return value


def parse_time_ms(text: str) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 time (a date alone is its midnight UTC;
    no offset means UTC), or None when ``text`` is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (moment - epoch) // _MILLISECOND


_MILLISECOND = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def event_time_ms(message: Message, received_ms: int) -> int:
    """When the call happened: ``timestamp`` (what Segment's destinations use), else
    ``originalTimestamp``, else the receipt time. A time that is not ISO 8601 is a 400."""
    for name in ("timestamp", "originalTimestamp"):
        value = message.get(name)
        if value is None:
            continue
        parsed = parse_time_ms(value) if isinstance(value, str) else None
        if parsed is None:
            raise NotASegmentMessage(name, "must be an ISO 8601 time")
        return parsed
    return received_ms


def epoch_ms(value: Any) -> Any:
    """A time trait as Drift's date attributes take it (epoch ms): ISO strings parsed,
    numbers below SECONDS_BELOW read as seconds. Anything else is kept as it is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 16:
            return epoch_ms(int(text))
        parsed = parse_time_ms(text)
        return value if parsed is None else parsed
    if isinstance(value, int | float):
        return int(round(value * 1000)) if abs(value) < SECONDS_BELOW else int(value)
    return flat(value)


def flat(value: Any) -> Any:
    """A value as a Drift attribute holds it: nested objects and lists as JSON strings."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def flattened(traits: Mapping[str, Any], renames: Mapping[str, str] | None = None,
              convert: Mapping[str, Callable[[Any], Any]] | None = None) -> dict[str, Any]:
    """Traits as Drift attributes: without ``id``; renamed by ``renames`` (unless a trait
    already has the new name); ``address`` flattened (its keys top-level, unless a trait of
    that name exists); other nested values as JSON strings."""
    renames = renames or {}
    convert = convert or {}
    attributes: dict[str, Any] = {}
    address = traits.get("address")
    for name, value in traits.items():
        if name == "id" or (name == "address" and isinstance(address, dict)):
            continue
        target = renames.get(name)
        if target is not None and target not in traits:
            name = target
        attributes[name] = convert.get(name, flat)(value)
    if isinstance(address, dict):
        for key, value in address.items():
            if key not in traits and key not in attributes:
                attributes[key] = flat(value)
    return attributes
