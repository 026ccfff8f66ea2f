"""``meeting_updated``: a meeting host rescheduled or cancelled a meeting."""

from __future__ import annotations

from . import meetings
from .base import Conversation, Data, Draft, Translator, pick

PROPERTIES = ("agentId", "contactId", "eventId", "eventType", "scheduledAt", "schedulerId",
              "slotEnd", "slotStart", "updatedAt")


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    properties = pick(meetings.with_contact(data), PROPERTIES)
    return [Draft("track", meetings.contact_id(data), properties, data.get("scheduledAt"))]


TRANSLATOR = Translator(
    event_type="meeting_updated",
    schema=meetings.MeetingData(),
    identity=meetings.identity,
    build=build,
)
