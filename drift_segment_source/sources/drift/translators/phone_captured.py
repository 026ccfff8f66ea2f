"""``phone_captured``: the visitor or an agent gave the visitor's phone number → ``identify``.

The contact is ``data.contactId``, else ``authorId`` when the author is the contact, else the
conversation's contact (``GET /conversations/{id}``). Drift sends no time: receipt time.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates_schema

from .base import Conversation, Data, Draft, NoContact, Translator
from .fields import DriftId, DriftSchema


class PhoneCapturedData(DriftSchema):
    phoneNumber = fields.String(required=True)
    contactId = DriftId(allow_none=True)
    conversationId = DriftId(allow_none=True)
    authorId = DriftId(allow_none=True)
    authorType = fields.String(allow_none=True)

    @validates_schema
    def _names_a_contact(self, data: Data, **kwargs: Any) -> None:
        if direct_contact_id(data) is None and data.get("conversationId") is None:
            raise ValidationError(
                "contactId, a contact authorId, or conversationId is required.", "contactId")


def direct_contact_id(data: Data) -> int | str | None:
    """The contact named by the payload itself, if any."""
    if data.get("contactId") is not None:
        found: int | str = data["contactId"]
        return found
    if data.get("authorType") == "contact" and data.get("authorId") is not None:
        author: int | str = data["authorId"]
        return author
    return None


def conversation_needed(data: Data) -> int | str | None:
    if direct_contact_id(data) is not None:
        return None
    conversation_id: int | str = data["conversationId"]
    return conversation_id


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    contact_id = direct_contact_id(data)
    if contact_id is None and conversation is not None:
        contact_id = conversation.get("contactId")
    if contact_id is None:
        raise NoContact(f"conversation {data.get('conversationId')} has no contactId, so "
                        "there is no Drift contact id to send as anonymousId")
    traits = {"contactId": contact_id, "phone": data["phoneNumber"]}
    return [Draft("identify", contact_id, traits, None)]


TRANSLATOR = Translator(
    event_type="phone_captured",
    schema=PhoneCapturedData(),
    identity=lambda data, received_ms: [data.get("conversationId"), direct_contact_id(data),
                                        data["phoneNumber"]],
    build=build,
    conversation_needed=conversation_needed,
)
