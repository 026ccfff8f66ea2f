"""What ``new_meeting`` and ``meeting_updated`` share: ``data`` is a Drift Meeting.

The contact is ``data.contactId`` when Drift sends it, else ``schedulerId`` (the visitor who
booked). The Segment timestamp is ``scheduledAt``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates_schema

from .base import Conversation, Data, Draft, Translator, pick, time_of
from .fields import Boolean, DriftId, DriftSchema, EventTime, OrgId, TimeProperty


class MeetingData(DriftSchema):
    agentId = DriftId(allow_none=True)
    conferenceType = fields.String(allow_none=True)
    contactId = DriftId(allow_none=True)
    conversationId = DriftId(allow_none=True)
    eventId = fields.String(allow_none=True)
    eventType = fields.String(allow_none=True)
    isOrgSlug = Boolean(allow_none=True)
    isPrivate = Boolean(allow_none=True)
    isRecurring = Boolean(allow_none=True)
    meetingSource = fields.String(allow_none=True)
    orgId = OrgId(allow_none=True)
    scheduledAt = EventTime(allow_none=True)
    schedulerId = DriftId(allow_none=True)
    slotEnd = TimeProperty(allow_none=True)
    slotStart = TimeProperty(allow_none=True)
    slug = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    updatedAt = TimeProperty(allow_none=True)

    @validates_schema
    def _names_a_contact(self, data: Data, **kwargs: Any) -> None:
        if data.get("contactId") is None and data.get("schedulerId") is None:
            raise ValidationError("contactId or schedulerId is required.", "schedulerId")


def contact_id(data: Data) -> int | str:
    """The visitor the meeting is with."""
    found: int | str = data["contactId"] if data.get("contactId") is not None else data[
        "schedulerId"]
    return found


def with_contact(data: Data) -> Data:
    """``data`` with ``contactId`` filled in from ``schedulerId`` when Drift left it out."""
    return {**data, "contactId": contact_id(data)}


def booking(data: Data) -> list[object]:
    """What identifies the booking: its eventId, which a reschedule keeps
    (docs/reliability.md#dedupe-horizon)."""
    if data.get("eventId") is not None:
        return [data["eventId"]]
    return [contact_id(data), data.get("agentId"), data.get("scheduledAt")]


def new_meeting_identity(data: Data, received_ms: int) -> list[object]:
    # Never the slot times: a backfill reads the current slots of a since-rescheduled
    # meeting, and must still match the booking delivered live.
    return booking(data)


def meeting_updated_identity(data: Data, received_ms: int) -> list[object]:
    # Each change of a booking is its own event: updatedAt says when (0 means unknown),
    # else the receipt time (a slot can come back: X → Y → X are three changes).
    return [*booking(data), data.get("eventType"), data.get("updatedAt") or received_ms]


def meeting_translator(event_type: str, properties: tuple[str, ...]) -> Translator:
    """The translator of ``new_meeting`` or ``meeting_updated``: the named Meeting fields."""

    def build(data: Data, conversation: Conversation | None) -> list[Draft]:
        fields = pick(with_contact(data), properties)
        return [Draft("track", contact_id(data), fields, data.get("scheduledAt"))]

    if event_type == "new_meeting":
        # The booking's key dates from when it was booked, however recent its updatedAt.
        return Translator(event_type=event_type, schema=MeetingData(),
                          identity=new_meeting_identity, build=build,
                          anchor_time=time_of("scheduledAt"))
    return Translator(event_type=event_type, schema=MeetingData(),
                      identity=meeting_updated_identity, build=build,
                      anchor_time=time_of("updatedAt"))
