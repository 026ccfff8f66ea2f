"""Identity stitching (opt-in, docs/event-mapping.md#identity-stitching): Drift contacts
joined to the site's own users.

With ``IDENTITY_STITCHING=external_id``, a contact the site identified with
``drift.identify(userId, …)`` has the site's user id as its Drift ``externalId``. Every
message for that contact then also carries ``userId`` = that externalId, and one identify
(``anonymousId`` + ``userId``, and ``email`` when known) links the contact's anonymous Drift
history to the user in Segment, once per contact and externalId.

Drift gives a visitor it does not know an externalId too: the ``drift_aid`` cookie value, a
UUID-shaped string. That is not the site's id, so it never becomes a ``userId``; the rule
is ``STITCHING_ANONYMOUS_PATTERN`` (a regular expression; externalIds it matches in full
are Drift's own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from drift_segment_source.sources.drift.translators import ContactFacts, SegmentCall, message_id
from drift_segment_source.store.commits import digest_of

# Drift's drift_aid values: five groups of hex digits like a UUID. Drift's own documented
# example ends with 11 digits, not 12, so the last group is allowed 10 to 12.
DRIFT_AID_PATTERN = (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{10,12}")
# No site's user id is this long; an externalId that is (a bug, or hostile input) would
# only make messages too large for Segment, so the contact is sent without userId.
MAX_USER_ID_CHARACTERS = 1_024
# The messageId "type" of linking identifies: drift-identity_link-<hash of org, contact, id>.
LINK = "identity_link"


@dataclass(frozen=True)
class Link:
    """The identify that links a contact to a user, and the key that says it was sent."""

    call: SegmentCall
    key: bytes


@dataclass(frozen=True)
class Stitching:
    """The stitching rule: which externalIds are the site's own user ids."""

    anonymous: re.Pattern[str]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Stitching | None:
        """The configured rule, or None when stitching is off (Drift app parity)."""
        mode = str(settings.get("IDENTITY_STITCHING") or "off")
        if mode == "off":
            return None
        if mode != "external_id":
            raise ValueError(f"IDENTITY_STITCHING must be 'off' or 'external_id', got {mode!r}")
        return cls(re.compile(str(settings.get("STITCHING_ANONYMOUS_PATTERN")
                                  or DRIFT_AID_PATTERN)))

    def user_id(self, external_id: str | None) -> str | None:
        """The site's user id an externalId stands for, or None for Drift's own ids."""
        if external_id is None or not external_id.strip():
            return None
        if len(external_id) > MAX_USER_ID_CHARACTERS:
            return None
        if self.anonymous.fullmatch(external_id.strip()):
            return None
        return external_id

    def stitch(self, org_id: int, calls: list[SegmentCall],
               facts: ContactFacts) -> tuple[list[SegmentCall], Link | None]:
        """The calls with ``userId`` set, and the linking identify, for an identified contact;
        the calls unchanged (and no link) for an anonymous one."""
        user_id = self.user_id(facts.external_id)
        if user_id is None or not calls:
            return calls, None
        contact = calls[0].anonymous_id
        link_id = message_id(org_id, LINK, [contact, user_id], 0)
        link = SegmentCall(kind="identify", anonymous_id=contact, event=None,
                           fields={"email": facts.email} if facts.email else {},
                           timestamp=calls[0].timestamp, message_id=link_id, user_id=user_id)
        return [replace(call, user_id=user_id) for call in calls], Link(link, digest_of(link_id))


def facts_of_contact(contact: Mapping[str, Any] | None) -> ContactFacts:
    """What ``GET /contacts/{id}`` says (None: Drift does not know the contact)."""
    attributes = (contact or {}).get("attributes") or {}
    external_id, email = attributes.get("externalId"), attributes.get("email")
    return ContactFacts(external_id=external_id if isinstance(external_id, str) else None,
                        email=email if isinstance(email, str) and email else None)


def merged(own: ContactFacts, looked_up: ContactFacts) -> ContactFacts:
    """The webhook's own facts, completed by the looked-up ones."""
    return ContactFacts(external_id=own.external_id or looked_up.external_id,
                        email=own.email or looked_up.email)
