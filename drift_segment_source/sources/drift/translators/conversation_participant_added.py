"""``conversation_participant_added``: an agent joined a conversation (manually or routed)."""

from .participants import participant_translator

TRANSLATOR = participant_translator("conversation_participant_added", "addedParticipants")
