"""``new_meeting``: a visitor booked a meeting through a Drift scheduling interface."""

from .meetings import meeting_translator

TRANSLATOR = meeting_translator("new_meeting", (
    "agentId", "conferenceType", "contactId", "conversationId", "eventId", "isOrgSlug",
    "isPrivate", "isRecurring", "meetingSource", "orgId", "scheduledAt", "schedulerId",
    "slotEnd", "slotStart", "slug", "status", "updatedAt"))
