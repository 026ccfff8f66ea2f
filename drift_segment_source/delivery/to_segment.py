"""Drift → Segment: a stored Drift event becomes the Segment messages it implies.

:func:`segment_messages` is the one path from a Drift event to Segment messages
(translate → stitch → build), used by delivery, by the door (to measure a webhook against
Segment's 32 KB limit) and by the ``translate`` command. :class:`ToSegment` prepares a
claimed row with it, starting the Drift API lookups the event needs (lookups.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drift_segment_source.destinations.segment import MessageBuilder, MessageTooLarge
from drift_segment_source.routing import Routing
from drift_segment_source.sources.drift.translators import (
    TRANSLATORS,
    Translator,
    dedupe_key,
    translate,
)
from drift_segment_source.sources.drift.translators.base import receipt_ms
from drift_segment_source.store.store import Failure, StoredWebhook

from .breakers import drift_key
from .lookups import DriftLookups
from .outcomes import Outcomes
from .rows import WAIT, Known, Prepared, Waiting
from .stitching import Stitching, facts_of_contact, merged

log = logging.getLogger("drift_segment_source.delivery")

# (the linking identify's dedupe key, the message) for an identified contact.
Link = tuple[bytes, dict[str, Any]]


@dataclass(frozen=True)
class Built:
    """The Segment messages of one Drift event, and the identify linking its contact to a
    user (identity stitching), sent once per contact and user."""

    messages: list[dict[str, Any]]
    link: Link | None = None


def stored_identity(translator: Translator, org_id: int, data: dict[str, Any],
                    received_at: float, stored_key: str) -> list[Any]:
    """The identity the event was stored under, its messageIds' basis. It is today's, unless
    a version that read numeric-string ids as they were sent made the key (and may have sent
    the messageIds) of those: its messages keep them, so a copy Segment has is dropped."""
    received_ms = receipt_ms(received_at)
    as_sent = list(translator.identity_as_sent(data, received_ms))
    if not translator.spellings.ids_as_text(data):
        return as_sent  # the usual case: ids sent as numbers, one identity either way
    identity = list(translator.identity(data, received_ms))
    if as_sent == identity or not stored_key:
        return identity
    if dedupe_key(org_id, translator.event_type, identity) != stored_key and dedupe_key(
            org_id, translator.event_type, as_sent) == stored_key:
        return as_sent
    return identity


def segment_messages(translator: Translator, org_id: int, data: dict[str, Any],
                     received_at: float, builder: MessageBuilder, *,
                     conversation: Mapping[str, Any] | None = None,
                     stitching: Stitching | None = None,
                     contact: Mapping[str, Any] | None = None,
                     identity: list[Any] | None = None) -> Built:
    """The messages a validated Drift event becomes: translated with its ``conversation``
    (when it needs one), stitched to its user with the webhook's own facts completed by
    ``contact`` (``GET /contacts/{id}``), built and size-checked by the Segment library.

    A stitched message that the userId takes over 32 KB is sent as the Drift app would send
    it (anonymousId only), without the link: the door measured the messages without it.
    Raises MessageTooLarge, NoContact, or whatever a translator raises.
    """
    received = datetime.fromtimestamp(received_at, tz=UTC)
    calls = translate(translator, org_id, data, received, conversation, identity)
    if stitching is not None and calls:
        facts = translator.contact_facts(data)
        if facts.external_id is None and contact is not None:
            facts = merged(facts, facts_of_contact(contact))
        stitched, link = stitching.stitch(org_id, calls, facts)
        if link is not None:
            try:
                return Built([builder.build(call) for call in stitched],
                             (link.key, builder.build(link.call)))
            except MessageTooLarge:
                log.warning("stitched message over 32 KB, sent without userId",
                            extra={"org_id": org_id, "type": translator.event_type})
    return Built([builder.build(call) for call in calls])


def contact_id_of(translator: Translator, org_id: int, data: dict[str, Any],
                  received_at: float, conversation: Mapping[str, Any] | None) -> str | None:
    """The Drift contact an event is about (the anonymousId of its first message), whose
    externalId identity stitching looks up; None when the event makes no message."""
    calls = translate(translator, org_id, data, datetime.fromtimestamp(received_at, tz=UTC),
                      conversation)
    return calls[0].anonymous_id if calls else None


class ToSegment:
    """Prepares claimed Drift rows: lookups started, messages built, or an outcome filed."""

    def __init__(self, routing: Routing, lookups: DriftLookups, builder: MessageBuilder,
                 stitching: Stitching | None) -> None:
        self.routing = routing
        self.lookups = lookups
        self.builder = builder
        self.stitching = stitching

    def prepare(self, row: StoredWebhook, outcomes: Outcomes, ready: list[Prepared],
                waiting: list[Waiting], known: Known) -> None:
        """Put the row in ``ready``, in ``waiting`` (a lookup it needs still runs) or under
        its outcome. Whatever it raises is filed under this row alone.

        Re-entrant: a row whose lookup has ended is prepared again from the start, with
        ``known`` holding the lookups it already waited for (their outcome, error or not).
        """
        translator = TRANSLATORS.get(row.event_type)
        if translator is None:
            outcomes.dead.append(Failure(row.id, f"no translator for {row.event_type}"))
            return
        try:
            data = translator.reshape(row.payload["data"])
            destination = self.routing.destination(row.org_id)
            conversation = None
            conversation_id = translator.conversation_needed(data)
            if conversation_id is not None:
                conversation = self.lookups.outcome(row, self.lookups.conversation(
                    row, conversation_id, known), known, outcomes, waiting)
                if conversation is WAIT:
                    return
            contact = None
            if self.stitching is not None and translator.contact_facts(data).external_id is None:
                contact = self.contact(row, translator, data, conversation, known, outcomes,
                                       waiting)
                if contact is WAIT:
                    return
            built = segment_messages(
                translator, row.org_id, data, row.received_at, self.builder,
                conversation=conversation, stitching=self.stitching, contact=contact,
                identity=stored_identity(translator, row.org_id, data, row.received_at,
                                         row.dedupe_key))
        except Exception as error:
            # A retryable failure here is the Drift API's: its rows are due when it recovers.
            outcomes.file(row.id, error, drift_key(row.org_id))
            return
        ready.append(Prepared(row, destination, built.messages, built.link))

    def contact(self, row: StoredWebhook, translator: Translator, data: dict[str, Any],
                conversation: Mapping[str, Any] | None, known: Known, outcomes: Outcomes,
                waiting: list[Waiting]) -> Any:
        """The contact as the Drift API knows it (None without a token), or WAIT."""
        contact_id = contact_id_of(translator, row.org_id, data, row.received_at, conversation)
        if contact_id is None:
            return None
        lookup = self.lookups.contact(row, contact_id, known)
        if lookup is None:
            return None
        return self.lookups.outcome(row, lookup, known, outcomes, waiting)
