"""``playbook_goal_met``: a visitor reached a playbook goal node; everything is in ``data``.

Drift sends no time for this event, so the Segment timestamp is the receipt time.
"""

from __future__ import annotations

from marshmallow import fields

from .base import ContactFacts, Conversation, Data, Draft, Translator, pick
from .fields import DriftId, DriftSchema

PROPERTIES = ("contactEmail", "contactId", "conversationId", "goalId", "goalName", "playbookId",
              "playbookName")


class PlaybookGoalMetData(DriftSchema):
    contactId = DriftId(required=True)
    conversationId = DriftId(required=True)
    contactEmail = fields.String(allow_none=True)
    goalId = fields.String(allow_none=True)
    goalName = fields.String(allow_none=True)
    playbookId = DriftId(allow_none=True)
    playbookName = fields.String(allow_none=True)


def build(data: Data, conversation: Conversation | None) -> list[Draft]:
    return [Draft("track", data["contactId"], pick(data, PROPERTIES), None)]


TRANSLATOR = Translator(
    event_type="playbook_goal_met",
    schema=PlaybookGoalMetData(),
    identity=lambda data, received_ms: [data["conversationId"], data.get("playbookId"),
                                      data.get("goalId")],
    build=build,
    contact_facts=lambda data: ContactFacts(email=data.get("contactEmail") or None),
)
