"""``new_meeting``: a visitor booked a meeting through a Drift scheduling interface."""

from __future__ import annotations

from . import meetings
from .base import Conversation, Data, Draft, Translator, pick

PROPERTIES = ("agentId", "conferenceType", "contactId", "conversationId", "eventId", "isOrgSlug",
              "isPrivate", "isRecurring", "meetingSource", "orgId", "scheduledAt", "schedulerId",
              "slotEnd", "slotStart", "slug", "status", "updatedAt")


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    properties = pick(meetings.with_contact(data), PROPERTIES)
    return [Draft("track", meetings.contact_id(data), properties, data.get("scheduledAt"))]


TRANSLATOR = Translator(
    event_type="new_meeting",
    schema=meetings.MeetingData(),
    identity=meetings.identity,
    build=build,
)
