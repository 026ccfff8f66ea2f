"""``group`` → the user's contact gets ``companyId`` = ``groupId`` and the group's traits as
company attributes (``PATCH /contacts/{id}``).

Drift's REST API has no company object a contact can be put in, so the company lives on its
contacts: each group trait ``x`` becomes the contact attribute ``companyX`` (``name`` →
``companyName``, ``industry`` → ``companyIndustry``, ``employees`` → ``companyEmployees``,
``plan`` → ``companyPlan``, ``website`` → ``companyWebsite``, and so on); the ``address`` is
flattened the same way (``city`` → ``companyCity``); nested values become JSON strings; the
``id`` trait is left out (``companyId`` is the groupId). The contact is found as for
``track``; a group never creates one (it carries no email of the user).
"""

from __future__ import annotations

from typing import Any

from .base import (
    Action,
    Message,
    NotASegmentMessage,
    SegmentTranslator,
    Upsert,
    contact_of,
    flattened,
    id_text,
    object_field,
)

PREFIX = "company"


def company_attribute(name: str) -> str:
    """``name`` → ``companyName``: the contact attribute a group trait becomes."""
    return PREFIX + name[:1].upper() + name[1:]


def build(message: Message, received_ms: int) -> list[Action]:
    group_id = message.get("groupId")
    if id_text(group_id) is None:
        raise NotASegmentMessage("groupId", "required: the id of the group (company)")
    external_id, contact_id = contact_of(message)
    traits = flattened(object_field(message, "traits"))
    attributes: dict[str, Any] = {"companyId": group_id}
    attributes.update((company_attribute(name), value) for name, value in traits.items()
                      if company_attribute(name) != "companyId")
    return [Upsert(attributes, external_id=external_id, contact_id=contact_id)]


TRANSLATOR = SegmentTranslator(call_type="group", build=build)
