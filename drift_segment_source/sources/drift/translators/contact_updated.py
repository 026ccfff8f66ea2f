"""``contact_updated``: contact attributes changed; becomes an ``identify`` of the changes.

``data.diff[]`` holds ``{name, previous, updated}``. A trait is named after ``name`` without
its ``attributes.`` prefix; a remaining dotted name becomes nested objects
(``socialProfiles.twitter`` → ``{"socialProfiles": {"twitter": …}}``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from marshmallow import ValidationError, fields

from .base import ContactFacts, Conversation, Data, Draft, Translator, time_of
from .fields import AnyJson, DriftId, DriftSchema, EventTime, OrgId

ATTRIBUTE_PREFIX = "attributes."
CHANGE_FIELDS = ("name", "previous", "updated")


# Drift's nested attributes are a level or two deep; each dot nests the trait once more.
MAX_TRAIT_DEPTH = 8


def names_a_trait(name: str) -> None:
    """A name that leaves no trait (``attributes.``, ``..``), or one nesting the trait
    absurdly deep, cannot be sent."""
    path = trait_path(name)
    if not path:
        raise ValidationError("names no attribute")
    if len(path) > MAX_TRAIT_DEPTH:
        raise ValidationError(f"nests the trait deeper than {MAX_TRAIT_DEPTH} levels")


class Change(DriftSchema):
    # marshmallow 4 ignores a validator's return value: it must raise.
    name = fields.String(required=True, validate=names_a_trait)
    previous = AnyJson(allow_none=True)
    updated = AnyJson(allow_none=True)


class ContactUpdatedData(DriftSchema):
    endUserId = DriftId(required=True)
    timestamp = EventTime(allow_none=True)
    orgId = OrgId(allow_none=True)
    diff = fields.List(fields.Nested(Change), required=True)


def trait_path(name: str) -> list[str]:
    """``attributes.address.city`` → ``["address", "city"]``."""
    if name.startswith(ATTRIBUTE_PREFIX):
        name = name[len(ATTRIBUTE_PREFIX):]
    return [part for part in name.split(".") if part]


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    traits: dict[str, Any] = {}
    for change in data["diff"]:
        if "updated" not in change:
            continue  # nothing was said about the new value, so nothing is sent
        *parents, leaf = trait_path(change["name"])
        target = traits
        for parent in parents:
            if not isinstance(target.get(parent), dict):
                target[parent] = {}
            target = target[parent]
        # An explicit null is sent as null: Drift cleared the attribute.
        target[leaf] = change["updated"]
    traits["contactId"] = data["endUserId"]
    return [Draft("identify", data["endUserId"], traits, data.get("timestamp"))]


def identity(data: Data, received_ms: int) -> list[object]:
    # Only the fields the schema keeps, so raw and validated data give the same identity.
    kept = [{key: change[key] for key in CHANGE_FIELDS if key in change}
            for change in data["diff"]]
    changes = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    # Without its timestamp, a change back and forth (a→b, b→a, a→b) repeats the same
    # diff: the receipt time tells the third from the first.
    when = data["timestamp"] if data.get("timestamp") is not None else received_ms
    return [data["endUserId"], when, hashlib.sha256(changes.encode()).hexdigest()]


def facts(data: Data) -> ContactFacts:
    """A change of the contact's externalId or email says who the contact now is."""
    found: dict[str, str] = {}
    for change in data["diff"]:
        path = trait_path(change["name"])
        if len(path) == 1 and path[0] in ("externalId", "email") and isinstance(
                change.get("updated"), str):
            found[path[0]] = change["updated"]
    return ContactFacts(external_id=found.get("externalId"), email=found.get("email"))


TRANSLATOR = Translator(
    event_type="contact_updated",
    schema=ContactUpdatedData(),
    identity=identity,
    build=build,
    contact_facts=facts,
    anchor_time=time_of("timestamp"),
)
