"""``button_clicked``: a visitor clicked a chat button; ``data`` is the Message it created."""

from __future__ import annotations

from marshmallow import ValidationError, fields, validates

from .base import Conversation, Data, Draft, Translator, pick, time_of
from .fields import DriftId, DriftSchema, EventTime, Numeric, OrgId

LOCATION_FIELDS = ("city", "country", "countryName", "latitude", "longitude", "postalCode",
                   "region")


class Author(DriftSchema):
    id = DriftId(required=True)
    type = fields.String(allow_none=True)


class Location(DriftSchema):
    city = fields.String(allow_none=True)
    country = fields.String(allow_none=True)
    countryName = fields.String(allow_none=True)
    latitude = Numeric(allow_none=True)
    longitude = Numeric(allow_none=True)
    postalCode = fields.String(allow_none=True)
    region = fields.String(allow_none=True)


class MessageContext(DriftSchema):
    href = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    location = fields.Nested(Location, allow_none=True)


class ButtonClickedData(DriftSchema):
    id = DriftId(allow_none=True)
    body = fields.String(allow_none=True)
    author = fields.Nested(Author, required=True)
    conversationId = DriftId(required=True)
    createdAt = EventTime(allow_none=True)
    context = fields.Nested(MessageContext, allow_none=True)
    orgId = OrgId(allow_none=True)

    @validates("author")
    def _author_is_the_contact(self, author: Data, **kwargs: object) -> None:
        # The click is the visitor's; an agent-authored message would name the wrong person.
        if author.get("type") not in (None, "contact"):
            raise ValidationError("author.type must be 'contact' for a button click.")


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    context = data.get("context") or {}
    properties = pick(data, ("body", "conversationId"))
    properties["contactId"] = data["author"]["id"]
    properties.update(pick(context, ("href", "ip", "locale")))
    # Location values pass through as Drift sent them (latitude stays the JSON number).
    location = pick(context.get("location") or {}, LOCATION_FIELDS)
    if location:
        properties["location"] = location
    return [Draft("track", data["author"]["id"], properties, data.get("createdAt"))]


def identity(data: Data, received_ms: int) -> list[object]:
    # The Message id identifies the click; without it, its conversation, time and text do.
    if data.get("id") is not None:
        return [data["id"]]
    return [data["conversationId"], data["author"]["id"], data.get("createdAt"), data.get("body")]


TRANSLATOR = Translator(
    event_type="button_clicked",
    schema=ButtonClickedData(),
    identity=identity,
    build=build,
    anchor_time=time_of("createdAt"),
)
