"""What every translator shares: the call it returns, messageIds and event times.

A translator is pure: Drift ``data`` (already validated by its schema) and, where the
event needs one, a Conversation fetched by the caller go in; Segment calls come out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from marshmallow import Schema

from .fields import FlattenedSchema, Spellings, flatten_nested_data

EVENT_PREFIX = "Drift Source Event: "
# The JSON messageIds are hashed from. One encoder built once: json.dumps with these options
# builds a new encoder on every call, a fifth of message_id's time.
CANONICAL_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)

Data = dict[str, Any]
Conversation = Mapping[str, Any]
# (validated data, receipt time in epoch ms) → the values that identify the Drift event.
Identity = Callable[[Data, int], Iterable[Any]]


class NoContact(ValueError):
    """A call would leave without a real Drift contact id: it is never sent
    (docs/reliability.md#failure-stays-with-its-row)."""


@dataclass(frozen=True)
class Draft:
    """A call a translator wants made; ids and times are filled in by :func:`translate`."""

    kind: Literal["track", "identify"]
    contact_id: int | str
    fields: Data
    event_time_ms: int | None


@dataclass(frozen=True)
class SegmentCall:
    """One Segment ``track`` or ``identify`` call, ready for the Segment library."""

    kind: Literal["track", "identify"]
    anonymous_id: str
    event: str | None
    fields: Data
    timestamp: datetime
    message_id: str
    user_id: str | None = None  # only with identity stitching (stitching.py)


@dataclass(frozen=True)
class ContactFacts:
    """What a webhook itself says about its contact's identity (for identity stitching)."""

    external_id: str | None = None
    email: str | None = None


def no_time(data: Data) -> int | None:
    """The event carries no time its identity depends on."""
    return None


def no_facts(data: Data) -> ContactFacts:
    """Most events say nothing about who the contact is."""
    return ContactFacts()


@dataclass(frozen=True)
class Translator:
    """How one Drift event type becomes Segment calls."""

    event_type: str
    schema: Schema
    identity: Identity
    build: Callable[[Data, Conversation | None], list[Draft]]
    conversation_needed: Callable[[Data], int | str | None] = field(default=lambda data: None)
    contact_facts: Callable[[Data], ContactFacts] = no_facts
    # When the event happened, as its identity knows it (epoch ms): the event's dedupe key
    # can be no older, which is what the dedupe horizon is checked against
    # (docs/reliability.md#dedupe-horizon).
    anchor_time: Callable[[Data], int | None] = no_time
    # Where the schema keeps ids and times (fields.Spellings), and the identity as the
    # module wrote it, over ids as sent (what dedupe keys were made of before ids were read
    # as numbers); both set from the above.
    spellings: Spellings = field(init=False)
    identity_as_sent: Identity = field(init=False)

    def __post_init__(self) -> None:
        spellings = Spellings.of(self.schema)
        as_sent = self.identity

        def identity(data: Data, received_ms: int) -> Iterable[Any]:
            # "123" and 123 are one Drift event: the same messageIds and dedupe key.
            return as_sent(spellings.canonical_ids(data), received_ms)

        object.__setattr__(self, "spellings", spellings)
        object.__setattr__(self, "identity_as_sent", as_sent)
        object.__setattr__(self, "identity", identity)

    def validate(self, data: Mapping[str, Any]) -> Data:
        """Load ``data`` with the schema; raises marshmallow's ValidationError."""
        loaded: Data = self.schema.load(data)
        return loaded

    def reshape(self, data: Mapping[str, Any]) -> Data:
        """Already-validated ``data`` in the shape ``validate`` gives, without re-checking it.

        Delivery translates stored webhooks, which passed ``validate`` when they arrived;
        running marshmallow again took a third of delivery's CPU. Translators only read the
        fields they name, so the only shapes to restore are ``data.data`` flattening and times
        sent as strings (validation reads them as epoch ms). A test holds every translator to
        ``translate(reshape(d)) == translate(validate(d))``.
        """
        if isinstance(self.schema, FlattenedSchema):
            data = flatten_nested_data(data)
        return self.spellings.numeric_times(data)


class NeedsConversation(LookupError):
    """The event can only be translated with its Conversation from the Drift API."""


def is_contact_id(value: Any) -> bool:
    """A Drift contact id: a 64-bit non-negative integer or its digits, nothing else."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**63
    return (isinstance(value, str) and 0 < len(value) <= 19 and value.isascii()
            and value.isdigit() and int(value) < 2**63)


def time_of(name: str) -> Callable[[Data], int | None]:
    """The event time in field ``name`` (epoch ms, validated), None when absent or 0."""
    def anchor(data: Data) -> int | None:
        value = data.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value else None
    return anchor




def receipt_ms(received_at: datetime | float) -> int:
    """The receipt time in epoch ms, as identities use it (the same on every delivery)."""
    seconds = received_at.timestamp() if isinstance(received_at, datetime) else received_at
    return int(round(seconds * 1000))


def pick(source: Mapping[str, Any], names: Iterable[str]) -> Data:
    """Copy the named fields that are present; absent or null fields are left out."""
    return {name: source[name] for name in names if source.get(name) is not None}


def event_datetime(value: int | None, received_at: datetime) -> datetime:
    """The event's own time (epoch ms, range-checked by fields.EventTime) as aware UTC.

    Falls back to the receipt time when Drift sent no time for the event.
    """
    if value is None:
        return received_at
    # Integer arithmetic: value / 1000 as a float can land on .424999 and print as .424.
    seconds, millis = divmod(value, 1000)
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(milliseconds=millis)


def message_id(org_id: int, event_type: str, identity: Iterable[Any], index: int) -> str:
    """Deterministic Segment messageId: same Drift event → same id, on every delivery.

    ``drift-<type>-<first 32 hex of sha256(canonical JSON [orgId, type, *identity, index])>``;
    at most 71 characters, under Segment's 100.
    """
    key = CANONICAL_JSON.encode([org_id, event_type, *identity, index])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"drift-{event_type}-{digest}"


def dedupe_key(org_id: int, event_type: str, identity: Iterable[Any]) -> str:
    """Key under which a webhook is stored once: the messageId basis without a call index."""
    return message_id(org_id, event_type, identity, -1)


def translate(
    translator: Translator,
    org_id: int,
    data: Data,
    received_at: datetime,
    conversation: Conversation | None = None,
    identity: Iterable[Any] | None = None,
) -> list[SegmentCall]:
    """Turn validated ``data`` into Segment calls with ids, names and times; ``identity``
    (the event's, by default) is what the messageIds are made of."""
    if conversation is None and translator.conversation_needed(data) is not None:
        raise NeedsConversation(str(translator.conversation_needed(data)))
    identity = list(translator.identity(data, receipt_ms(received_at))
                    if identity is None else identity)
    calls = []
    for index, draft in enumerate(translator.build(data, conversation)):
        # One check for every translator: a message for "None" would merge unrelated
        # visitors into one Segment profile.
        if not is_contact_id(draft.contact_id):
            raise NoContact(f"{translator.event_type} has no Drift contact id to send as "
                            f"anonymousId (got {draft.contact_id!r})")
        calls.append(
            SegmentCall(
                kind=draft.kind,
                anonymous_id=str(draft.contact_id),
                event=EVENT_PREFIX + translator.event_type if draft.kind == "track" else None,
                fields=draft.fields,
                timestamp=event_datetime(draft.event_time_ms, received_at),
                message_id=message_id(org_id, translator.event_type, identity, index),
            )
        )
    return calls
