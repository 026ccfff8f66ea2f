"""One translator per Drift event type; this registry is the list of supported types.

Adding an event type: one module with a ``TRANSLATOR``, one line here, one fixture folder.
"""

from __future__ import annotations

from . import (
    button_clicked,
    contact_identified,
    contact_updated,
    conversation_participant_added,
    conversation_participant_removed,
    conversation_push,
    meeting_updated,
    new_conversation,
    new_meeting,
    phone_captured,
    playbook_goal_met,
)
from .base import (
    EVENT_PREFIX,
    ContactFacts,
    NeedsConversation,
    NoContact,
    SegmentCall,
    Translator,
    dedupe_key,
    message_id,
    translate,
)

TRANSLATORS: dict[str, Translator] = {
    module.TRANSLATOR.event_type: module.TRANSLATOR
    for module in (
        new_conversation,
        button_clicked,
        conversation_push,
        contact_updated,
        new_meeting,
        meeting_updated,
        conversation_participant_removed,
        conversation_participant_added,
        playbook_goal_met,
        phone_captured,
        contact_identified,
    )
}

__all__ = [
    "EVENT_PREFIX",
    "ContactFacts",
    "TRANSLATORS",
    "NeedsConversation",
    "NoContact",
    "SegmentCall",
    "Translator",
    "dedupe_key",
    "message_id",
    "translate",
]
