"""``conversation_participant_removed``: a participant left a conversation."""

from .participants import participant_translator

TRANSLATOR = participant_translator("conversation_participant_removed", "removedParticipants")
