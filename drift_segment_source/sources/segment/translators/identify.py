"""``identify`` → the contact whose externalId is the user's id: its attributes set (found
with ``GET /contacts?idType=external``, then ``PATCH``), or created with its email.

The user's id is ``userId``, else the ``id`` trait, else the ``username`` trait (Segment's
Drift destination does the same). Traits become attributes with the destination's renames:
``createdAt`` → ``startDate`` (epoch ms), ``title`` → ``employmentTitle``, ``description``
→ ``bio``; ``address`` is flattened; ``id`` (and an ``externalId`` trait) are left out:
the contact's externalId is the user's id.
"""

from __future__ import annotations

from .base import (
    Action,
    Message,
    NotRelayed,
    SegmentTranslator,
    Upsert,
    epoch_ms,
    flattened,
    id_text,
    object_field,
    user_id,
)

RENAMES = {"createdAt": "startDate", "title": "employmentTitle", "description": "bio"}


def build(message: Message, received_ms: int) -> list[Action]:
    traits = object_field(message, "traits")
    external_id = (user_id(message) or id_text(traits.get("id"))
                   or id_text(traits.get("username")))
    if external_id is None:
        raise NotRelayed("identify without a userId, id or username trait: Drift finds "
                         "contacts by externalId, and there is none")
    attributes = flattened(traits, RENAMES, {"startDate": epoch_ms})
    # The contact's externalId is the user's id; a trait must not re-key the contact.
    attributes.pop("externalId", None)
    if not attributes:
        raise NotRelayed("identify without traits: there is nothing to set in Drift")
    email = traits.get("email")
    return [Upsert(
        attributes=attributes,
        external_id=external_id,
        email=email.strip() if isinstance(email, str) and email.strip() else None,
    )]


TRANSLATOR = SegmentTranslator(call_type="identify", build=build)
