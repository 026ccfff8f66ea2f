"""The one way a webhook enters the store: route → validate → check → dedupe key → store.

The webhook endpoint, ``quarantine retry`` and ``backfill`` all take webhooks in through
:func:`take_in`, so each gets the same answers, the same dedupe key and the same stored form
(docs/reliability.md#what-every-request-gets). A webhook is accepted only if delivery can
carry it to Segment.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from drift_segment_source.delivery.to_segment import segment_messages
from drift_segment_source.destinations.segment import MessageBuilder, MessageTooLarge
from drift_segment_source.routing import Routing
from drift_segment_source.sources.door import Rejected, Taken, storage_rejection
from drift_segment_source.store.commits import digest_of
from drift_segment_source.store.store import Store, StoreUnavailable, Unstorable, storage_error

from .envelope import Envelope
from .translators import TRANSLATORS, Translator, dedupe_key
from .translators.base import receipt_ms

log = logging.getLogger("drift_segment_source.intake")

# A Segment message holds only fields of the webhook's data: each character at most three
# times its UTF-8 size once JSON-escaped, a dotted trait name (`a.b`) at most three and a
# half times once nested, plus about 1 KB of envelope. Data up to this size always fits
# Segment's 32 KB limit, so only larger webhooks are translated at the door to check.
ALWAYS_FITS_BYTES = 8_000
# Drift's clock and ours may disagree a little; the dedupe horizon keeps a day of margin.
HORIZON_MARGIN_SECONDS = 86_400
# Stands in for the Drift API's conversation when measuring a message at the door.
STAND_IN_CONVERSATION = {"contactId": 0}


class _Builder(threading.local):
    """One Segment message builder per thread (the library's client is not shared)."""

    def __init__(self) -> None:
        self.builder = MessageBuilder()


_builders = _Builder()


def take_in(envelope: Envelope, store: Store, routing: Routing, *, received_at: float,
            keep_invalid: bool = True) -> Taken:
    """Store the webhook, or say why it is ignored.

    Raises Rejected with the answer for anything else: 422 (quarantined when
    ``keep_invalid``), 400 when the store or Segment cannot carry it, 503 when the store is
    down. ``received_at`` is the receipt time in epoch seconds, kept to the millisecond.
    """
    translator = TRANSLATORS.get(envelope.event_type)
    if translator is None:
        return Taken("ignored", reason="event type not relayed")
    try:
        return store_event(translator, envelope, store, routing, round(received_at, 3),
                           keep_invalid)
    except SQLAlchemyError as error:  # reading orgs or the horizon
        raise storage_rejection(storage_error(error)) from None
    except (StoreUnavailable, Unstorable) as error:
        raise storage_rejection(error) from None


def store_event(translator: Translator, envelope: Envelope, store: Store, routing: Routing,
                received_at: float, keep_invalid: bool) -> Taken:
    """take_in's steps for a relayed type; storage errors are the caller's to answer."""
    route = routing.route(envelope.org_id)
    if route.ignore:
        return Taken("ignored", reason=route.ignore, outcome="org_not_installed")
    try:
        data = translator.validate(envelope.data)
    except ValidationError as error:
        invalid(store, envelope, error.messages, keep_invalid)
    too_large = oversize(translator, envelope, data, received_at)
    if too_large:
        invalid(store, envelope, {"data": [too_large]}, keep_invalid)
    if stored_as_sent_before(translator, envelope, data, store, received_at):
        return Taken("duplicate")
    try:
        key = dedupe_key(envelope.org_id, envelope.event_type,
                         translator.identity(data, receipt_ms(received_at)))
        if beyond_horizon(store, translator.anchor_time(data), key):
            return Taken("duplicate")
        stored_id = store.accept(envelope.org_id, envelope.event_type, key,
                                 envelope.stored_payload, received_at=received_at,
                                 hold_reason=route.hold, dry_run=routing.dry_run)
    except UnicodeEncodeError:
        # Webhooks are checked at the door (envelope.check_carriable); this catches what
        # backfill brings from the Drift API.
        raise Rejected(400, "invalid_unicode", "The webhook holds a lone UTF-16 surrogate, "
                       "which UTF-8 cannot store.") from None
    if stored_id is None:
        return Taken("duplicate")
    return Taken("accepted", stored_id)


def stored_as_sent_before(translator: Translator, envelope: Envelope, data: dict[str, Any],
                          store: Store, received_at: float) -> bool:
    """The event, sent with numeric-string ids, was stored by a version that made its dedupe
    key of the ids as sent (before ``"123"`` and ``123`` were one event)."""
    received_ms = receipt_ms(received_at)
    as_sent = list(translator.identity_as_sent(data, received_ms))
    if as_sent == list(translator.identity(data, received_ms)):
        return False  # ids sent as numbers: the key never changed
    earlier = dedupe_key(envelope.org_id, envelope.event_type, as_sent)
    return bool(store.known_keys([digest_of(earlier)]))


def invalid(store: Store, envelope: Envelope, errors: Any, keep: bool) -> Any:
    """Rejected(422) with the field errors; the payload is quarantined when ``keep``."""
    details: dict[str, Any] = {"fields": errors}
    message = f"data does not match the {envelope.event_type} schema"
    if keep:
        details["quarantineId"] = store.quarantine(
            envelope.org_id, envelope.event_type, envelope.stored_payload, errors)
        message += "; the payload is quarantined."
    raise Rejected(422, "invalid_data", message, **details)


def oversize(translator: Translator, envelope: Envelope, data: dict[str, Any],
             received_at: float) -> str | None:
    """Why the webhook's messages would be over Segment's 32 KB limit, if they would be."""
    payload = envelope.stored_payload
    # At most 4 UTF-8 bytes a character: short text needs no encoding to know.
    if len(payload) * 4 <= ALWAYS_FITS_BYTES or len(payload.encode()) <= ALWAYS_FITS_BYTES:
        return None
    conversation = (STAND_IN_CONVERSATION
                    if translator.conversation_needed(data) is not None else None)
    try:
        segment_messages(translator, envelope.org_id, data, received_at, _builders.builder,
                         conversation=conversation)
    except MessageTooLarge:
        return "makes a Segment message over the 32 KB limit"
    return None


def beyond_horizon(store: Store, happened_ms: int | None, key: str) -> bool:
    """For an event that happened before the dedupe keys kept (docs/reliability.md, "Dedupe
    horizon"): True when its key is kept all the same (a duplicate), else Rejected(400)
    rather than a second delivery. False for every other event."""
    if happened_ms is None:
        return False
    horizon = store.dedupe_horizon()
    if not horizon or happened_ms / 1000 >= horizon + HORIZON_MARGIN_SECONDS:
        return False
    if store.known_keys({digest_of(key)}):
        return True
    raise Rejected(400, "beyond_dedupe_horizon",
                       "The event happened before the oldest dedupe key kept "
                       "(DEDUPE_RETENTION_DAYS), so it could be a copy of one already "
                       "delivered; it is refused rather than sent twice.",
                       horizon=horizon + HORIZON_MARGIN_SECONDS)
