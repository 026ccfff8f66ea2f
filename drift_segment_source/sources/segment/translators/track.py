"""``track`` → a custom event on the user's Drift timeline (``POST /contacts/timeline``).

The contact is the one whose externalId is ``userId``; without a userId, the Drift contact
whose id is the ``anonymousId`` (the client-side script sets Segment's anonymousId to it).
The event keeps its name; its time is the call's ``timestamp`` in epoch ms. Drift's
timeline takes no properties (its ``attributes`` field is deprecated), so none are sent.
"""

from __future__ import annotations

from .base import (
    Action,
    Message,
    NotASegmentMessage,
    SegmentTranslator,
    Timeline,
    contact_of,
    event_time_ms,
)


def build(message: Message, received_ms: int) -> list[Action]:
    event = message.get("event")
    if not isinstance(event, str) or not event.strip():
        raise NotASegmentMessage("event", "required: the name of the tracked event")
    external_id, contact_id = contact_of(message)
    return [Timeline(event, event_time_ms(message, received_ms), external_id, contact_id)]


TRANSLATOR = SegmentTranslator(call_type="track", build=build)
