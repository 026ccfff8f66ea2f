"""``contact_identified``: a visitor gave their email in chat → ``identify``
(docs/event-mapping.md#contact-identified).

Public sources disagree on ``data``: a Contact (``id``, ``createdAt``, ``attributes{email,
name, phone, externalId, …}``) or an ``endUserId`` form with the attributes beside it. Both
are accepted. The time is the event's own ``timestamp`` when the payload has one, else the
receipt time (a Contact's ``createdAt`` is when the contact was created, not identified).
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates_schema

from .base import ContactFacts, Conversation, Data, Draft, Translator, pick, time_of
from .fields import DriftId, DriftSchema, EventTime, TimeProperty

TRAITS = ("email", "name", "phone", "externalId")


class ContactAttributes(DriftSchema):
    email = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    externalId = fields.String(allow_none=True)


class ContactIdentifiedData(ContactAttributes):
    id = DriftId(allow_none=True)
    endUserId = DriftId(allow_none=True)
    createdAt = TimeProperty(allow_none=True)
    timestamp = EventTime(allow_none=True)
    attributes = fields.Nested(ContactAttributes, allow_none=True)

    @validates_schema
    def _names_a_contact(self, data: Data, **kwargs: Any) -> None:
        if data.get("endUserId") is None and data.get("id") is None:
            raise ValidationError("endUserId (or the Contact's id) is required.", "endUserId")


def contact_id(data: Data) -> int | str:
    """The contact: ``endUserId`` when given, else the Contact's own ``id``."""
    found: int | str = data["endUserId"] if data.get("endUserId") is not None else data["id"]
    return found


def attributes(data: Data) -> Data:
    """The identity attributes, from ``attributes`` or beside the id (attributes win)."""
    return {**pick(data, TRAITS), **pick(data.get("attributes") or {}, TRAITS)}


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    traits = {"contactId": contact_id(data), **attributes(data)}
    return [Draft("identify", contact_id(data), traits, data.get("timestamp"))]


def facts(data: Data) -> ContactFacts:
    found = attributes(data)
    return ContactFacts(external_id=found.get("externalId"), email=found.get("email"))


TRANSLATOR = Translator(
    event_type="contact_identified",
    schema=ContactIdentifiedData(),
    # One contact identified by one email (and externalId) is one event.
    identity=lambda data, received_ms: [contact_id(data), attributes(data).get("email"),
                                        attributes(data).get("externalId")],
    build=build,
    contact_facts=facts,
    anchor_time=time_of("timestamp"),
)
