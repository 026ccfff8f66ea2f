"""One translator per Segment call type (docs/segment-to-drift.md); this registry is the
list of relayed types.

Adding a call type: one module with a ``SegmentTranslator``, one line here, one fixture folder.
"""

from __future__ import annotations

from typing import Any

from drift_segment_source.sources.drift.translators.base import dedupe_key

from . import group, identify, page, track
from .base import (
    Action,
    Message,
    NotASegmentMessage,
    NotRelayed,
    SegmentTranslator,
    Timeline,
    Upsert,
    id_text,
)

SEGMENT_TRANSLATORS: dict[str, SegmentTranslator] = {
    translator.call_type: translator
    for translator in (identify.TRANSLATOR, track.TRANSLATOR, page.PAGE, page.SCREEN,
                       group.TRANSLATOR)
}
# Segment calls that have no Drift equivalent, each with the reason it gets.
NOT_RELAYED = {
    "alias": "alias is not relayed: Drift's API cannot merge two contacts",
    "delete": "delete is not relayed: this service never deletes Drift contacts; use "
              "Drift's own privacy tools",
}
# Stored webhooks of the Segment → Drift direction have event types with this prefix.
EVENT_TYPE_PREFIX = "segment:"


def event_type(call_type: str) -> str:
    """The stored event type of a Segment call, e.g. ``segment:identify``."""
    return EVENT_TYPE_PREFIX + call_type


def check(message: Message) -> str:
    """The message's call type, once it has what every Segment call of that type has: a
    ``type``, and a ``userId`` or ``anonymousId`` (``delete`` and unknown types aside);
    NotASegmentMessage otherwise."""
    call_type = message.get("type")
    if not isinstance(call_type, str) or not call_type.strip():
        raise NotASegmentMessage("type", "required: the Segment call type, e.g. identify")
    needs_user = call_type in SEGMENT_TRANSLATORS or call_type == "alias"
    if needs_user and id_text(message.get("userId")) is None \
            and id_text(message.get("anonymousId")) is None:
        raise NotASegmentMessage("userId", f"{call_type} needs a userId or an anonymousId")
    return call_type


def translate(message: Message, received_ms: int) -> list[Action]:
    """The Drift actions a Segment message becomes; NotASegmentMessage or NotRelayed."""
    call_type = check(message)
    if call_type in NOT_RELAYED:
        raise NotRelayed(NOT_RELAYED[call_type])
    translator = SEGMENT_TRANSLATORS.get(call_type)
    if translator is None:
        raise NotRelayed(f"Segment call type {call_type[:40]!r} is not relayed")
    return translator.build(message, received_ms)


def segment_dedupe_key(org_id: int, message: Message, content_digest: str) -> str:
    """Key under which a Segment message is stored once: its ``messageId``, else (a message
    without one) the digest of its content."""
    message_id: Any = message.get("messageId")
    identity = (["messageId", message_id] if isinstance(message_id, str) and message_id
                else ["content", content_digest])
    return dedupe_key(org_id, event_type(str(message.get("type"))), identity)


__all__ = [
    "EVENT_TYPE_PREFIX",
    "NOT_RELAYED",
    "SEGMENT_TRANSLATORS",
    "Action",
    "Message",
    "NotASegmentMessage",
    "NotRelayed",
    "SegmentTranslator",
    "Timeline",
    "Upsert",
    "check",
    "event_type",
    "segment_dedupe_key",
    "translate",
]
