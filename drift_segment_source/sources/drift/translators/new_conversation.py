"""``new_conversation``: a site visitor engaged with a playbook; ``data`` is a Conversation."""

from __future__ import annotations

from marshmallow import fields

from .base import Conversation, Data, Draft, Translator, pick, time_of
from .fields import DriftId, DriftSchema, EventTime, TimeProperty

PROPERTIES = ("contactId", "createdAt", "id", "inboxId", "relatedPlaybookId", "status",
              "updatedAt")


class NewConversationData(DriftSchema):
    id = DriftId(required=True)
    contactId = DriftId(required=True)
    createdAt = EventTime(allow_none=True)
    inboxId = DriftId(allow_none=True)
    relatedPlaybookId = DriftId(allow_none=True)
    status = fields.String(allow_none=True)
    updatedAt = TimeProperty(allow_none=True)


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    return [Draft("track", data["contactId"], pick(data, PROPERTIES), data.get("createdAt"))]


TRANSLATOR = Translator(
    event_type="new_conversation",
    schema=NewConversationData(),
    identity=lambda data, received_ms: [data["id"]],
    build=build,
    anchor_time=time_of("createdAt"),
)
