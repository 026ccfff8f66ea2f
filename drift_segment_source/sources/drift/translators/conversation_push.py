"""``conversation_push``: a conversation was closed, manually synced, or went inactive.

Push fields (``conversationId``, ``pushedAt``, ``source``, ``userId``) come from ``data``,
flat or nested one level under ``data.data``. Conversation fields come from the payload
when it carries them, else from ``GET /conversations/{id}`` (fetched by the caller).
"""

from __future__ import annotations

from marshmallow import fields

from .base import Conversation, Data, Draft, Translator, pick, time_of
from .fields import DriftId, EventTime, FlattenedSchema, IdList, TimeProperty

PUSH_FIELDS = ("conversationId", "pushedAt", "source", "userId")
CONVERSATION_FIELDS = ("contactId", "createdAt", "id", "inboxId", "participants",
                       "relatedPlaybookId", "status", "updatedAt")
# Fields every Conversation has; a payload missing any of them needs the API's copy.
ALWAYS_IN_A_CONVERSATION = ("contactId", "createdAt", "inboxId", "status", "updatedAt")


class ConversationPushData(FlattenedSchema):
    conversationId = DriftId(required=True)
    pushedAt = EventTime(allow_none=True)
    source = fields.String(allow_none=True)
    userId = DriftId(allow_none=True)
    contactId = DriftId(allow_none=True)
    createdAt = TimeProperty(allow_none=True)
    id = DriftId(allow_none=True)
    inboxId = DriftId(allow_none=True)
    participants = IdList(allow_none=True)
    relatedPlaybookId = DriftId(allow_none=True)
    status = fields.String(allow_none=True)
    updatedAt = TimeProperty(allow_none=True)


def conversation_needed(data: Data) -> int | str | None:
    if all(data.get(name) is not None for name in ALWAYS_IN_A_CONVERSATION):
        return None
    conversation_id: int | str = data["conversationId"]
    return conversation_id


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    properties = pick(conversation or {}, CONVERSATION_FIELDS)
    properties.update(pick(data, CONVERSATION_FIELDS))  # the payload's own copy wins
    properties.update(pick(data, PUSH_FIELDS))
    return [Draft("track", properties["contactId"], properties, data.get("pushedAt"))]


def identity(data: Data, received_ms: int) -> list[object]:
    # A conversation is pushed many times (closed, synced, inactive): pushedAt tells the
    # pushes apart. Without it only the receipt time can, so a Drift retry of such a
    # webhook would count as a second push (Drift documents no retries).
    pushed = data.get("pushedAt")
    return [data["conversationId"], pushed if pushed is not None else received_ms,
            data.get("source")]


TRANSLATOR = Translator(
    event_type="conversation_push",
    schema=ConversationPushData(),
    identity=identity,
    build=build,
    conversation_needed=conversation_needed,
    anchor_time=time_of("pushedAt"),
)
