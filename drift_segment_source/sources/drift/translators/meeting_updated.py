"""``meeting_updated``: a meeting host rescheduled or cancelled a meeting."""

from .meetings import meeting_translator

TRANSLATOR = meeting_translator("meeting_updated", (
    "agentId", "contactId", "eventId", "eventType", "scheduledAt", "schedulerId", "slotEnd",
    "slotStart", "updatedAt"))
