"""What the two participant events share: who joined or left a conversation, and when.

Drift names the conversation but (in public schemas) not its contact, so the contact comes
from ``data.contactId`` when present, else from the Conversation (``GET /conversations/{id}``).
"""

from __future__ import annotations

from .base import Conversation, Data, Draft, Translator, pick, time_of
from .fields import DriftId, EventTime, FlattenedSchema, IdList


def participant_translator(event_type: str, list_name: str) -> Translator:
    """The translator of ``conversation_participant_added`` or ``..._removed``."""
    properties = sorted((list_name, "changedAt", "contactId", "conversationId"))
    schema = FlattenedSchema.from_dict(
        {
            "conversationId": DriftId(required=True),
            "contactId": DriftId(allow_none=True),
            "changedAt": EventTime(allow_none=True),
            list_name: IdList(allow_none=True),
        },
        name=f"{event_type}Data",
    )

    def build(data: Data, conversation: Conversation | None) -> list[Draft]:
        found = dict(data)
        if found.get("contactId") is None and conversation is not None:
            found["contactId"] = conversation.get("contactId")
        return [Draft("track", found["contactId"], pick(found, properties), data.get("changedAt"))]

    def conversation_needed(data: Data) -> int | str | None:
        if data.get("contactId") is not None:
            return None
        conversation_id: int | str = data["conversationId"]
        return conversation_id

    return Translator(
        event_type=event_type,
        schema=schema(),
        identity=lambda data, received_ms: [
            data["conversationId"],
            # Without changedAt, the same agent joining twice is told apart by receipt time.
            data["changedAt"] if data.get("changedAt") is not None else received_ms,
            sorted(map(str, data.get(list_name) or [])),
        ],
        build=build,
        conversation_needed=conversation_needed,
        anchor_time=time_of("changedAt"),
    )
