"""``POST /webhooks/segment`` (app mode: ``/webhooks/segment/<orgId>``, with the org's own
secret): Segment's Webhooks destination in → verify → check → store, then answer
(docs/segment-to-drift.md). Delivery applies the stored messages to Drift
(``delivery/to_drift.py``, ``destinations/drift.py``).

Checks run in this order: size and media type (413, 400, as for Drift's webhooks), the
signature over the raw bytes (401), JSON (400), then each message: what every Segment call
has (400), the loop guard, and calls with no Drift equivalent (200 ignored, with the reason);
then the store (200 accepted or duplicate, by Segment's ``messageId``; 503 when the store is
down, which Segment retries for up to 4 hours). ``accepted`` is said only after the commit.

The signature is ``X-Signature``: the hex HMAC-SHA1 of the body with the shared secret.
Segment's Webhooks (Actions) destination signs ``JSON.stringify(data)``, and with batching
on, ``data`` is the batch's first event, not the array it sends. So a JSON array is accepted
when the signature is of the whole body (Classic, or Actions once Segment fixes this) or of
the exact bytes of its first element. In the second case only that element is authenticated,
so a captured signed message could be replayed with forged elements after it: that form is
accepted only while the signed element's ``receivedAt`` (else ``sentAt``, both set by Segment
or its library when the event is sent) is recent (``SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS``;
see docs/segment-to-drift.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets as random_secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import NotFound

from drift_segment_source import config, metrics
from drift_segment_source.destinations.segment import INTEGRATION
from drift_segment_source.routing import current_routing
from drift_segment_source.sources.door import (
    Rejected,
    Taken,
    WalksNeeded,
    check_carriable,
    count_refusal,
    parse_json,
    read_body,
    storage_rejection,
)
from drift_segment_source.sources.drift.translators import EVENT_PREFIX
from drift_segment_source.store.refusals import SEGMENT_MISSING, SEGMENT_STALE, SEGMENT_WRONG
from drift_segment_source.store.store import Store, StoreUnavailable, Unstorable, storage_error

from .translators import (
    NOT_RELAYED,
    SEGMENT_TRANSLATORS,
    NotASegmentMessage,
    NotRelayed,
    check,
    event_type,
    segment_dedupe_key,
    translate,
)
from .translators.base import parse_time_ms

blueprint = Blueprint("segment_webhooks", __name__)
log = logging.getLogger("drift_segment_source.segment_webhooks")

# Self-hosted, the Segment → Drift direction has one Drift org, whose id Segment's messages
# do not carry: its rows are stored under this org id (the Drift token serves any org id).
SELF_HOSTED_ORG = 0
# Messages of one batch are stored from this many threads, so the group commit writes them
# in a few transactions instead of one each (Actions batches hold up to 4,000 events, and
# Segment waits 10 s for the answer).
BATCH_STORE_THREADS = 16
WHITESPACE = b" \t\r\n"


@blueprint.post("/webhooks/segment")
def receive() -> tuple[Response, int]:
    """Answer one request of Segment's Webhooks destination (self-hosted)."""
    secrets: tuple[str, ...] = current_app.config["SEGMENT_SHARED_SECRET"]
    if not secrets or config.app_mode(current_app.config):
        raise NotFound("Segment → Drift is off: set SEGMENT_SHARED_SECRET to turn it on.")
    return answer(SELF_HOSTED_ORG, secrets)


@blueprint.post("/webhooks/segment/<int:org_id>")
def receive_for_org(org_id: int) -> tuple[Response, int]:
    """Answer one request of an installed org's Webhooks destination (app mode), signed
    with the secret shown on that org's setup page."""
    if not config.app_mode(current_app.config):
        raise NotFound("Segment → Drift per org is an app-mode endpoint.")
    secret = current_routing().segment_secret(org_id) if 0 < org_id < 2**63 else None
    if secret is None:
        # An org that never installed (or has no secret) is checked against a secret nobody
        # holds: every request fails where an installed org's unsigned request fails, with
        # the same answer, so probing ids tells nobody which orgs use this service.
        secret = random_secrets.token_hex(32)
    return answer(org_id, (secret,))


def answer(org_id: int, secrets: Sequence[str]) -> tuple[Response, int]:
    """Check, store and answer a request signed with one of ``secrets`` for ``org_id``."""
    started = time.perf_counter()
    store: Store = current_app.extensions["store"]
    signed = False
    try:
        body = read_body()
        whole = check_signature(body, request.headers.get("X-Signature"), secrets)
        signed = True
        document = parse_json(body)
        if not whole:
            check_signed_element_is_recent(document, store.now(),
                                           current_app.config["SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS"])
    except Rejected as rejection:
        status, reply = rejection.status, rejection.body
        count(None, str(rejection.body["error"]))
        if rejection.status == 401:
            count_refusal(SEGMENT_STALE if signed else SEGMENT_WRONG
                          if request.headers.get("X-Signature") else SEGMENT_MISSING)
    else:
        received_at = round(store.now(), 3)
        walks = WalksNeeded.of(body)
        try:
            # Each message's outcome is counted where it is decided.
            if isinstance(document, list):
                status, reply = 200, take_batch(walks, document, org_id, store, received_at)
            else:
                taken = take_message(walks, document, org_id, store, received_at)
                status, reply = 200, taken.answer()
        except Rejected as rejection:
            status, reply = rejection.status, rejection.body
    if "accepted" in (reply.get("status"), *reply.get("counts", {})):
        current_app.extensions["delivery_wakeup"].set()
    # Refusals are logged at WARNING in aggregate (store/refusals.py), not one line each.
    log.log(logging.DEBUG if status == 401 else logging.INFO, "segment webhook", extra={
        "org_id": org_id, "status": status, "outcome": reply.get("status") or reply.get("error"),
        "request_id": g.get("request_id"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2)})
    return jsonify(reply), status


# -- the signature ----------------------------------------------------------------------------


def check_signature(body: bytes, presented: str | None, secrets: Sequence[str]) -> bool:
    """Whether ``presented`` is the HMAC-SHA1 of the whole body (True) or only of a batch's
    first element (False), with one of ``secrets`` (constant-time compares, every one made);
    Rejected(401) when it is neither."""
    first = first_element(body)
    wanted = (presented or "").strip().lower().encode("utf-8", "replace")
    whole = of_first = False
    for secret in secrets:
        key = secret.encode("utf-8")
        whole |= hmac.compare_digest(hmac.new(key, body, hashlib.sha1).hexdigest().encode(),
                                     wanted)
        if first is not None:
            of_first |= hmac.compare_digest(
                hmac.new(key, first, hashlib.sha1).hexdigest().encode(), wanted)
    if not presented or not (whole or of_first):
        raise Rejected(401, "unauthorized", "Missing or wrong X-Signature (HMAC-SHA1 of the "
                       "body with SEGMENT_SHARED_SECRET).")
    return whole


def check_signed_element_is_recent(document: Any, now: float, max_age_hours: float) -> None:
    """Rejected(401) unless the signed first element of a batch says it was sent recently.

    Its signature covers no time of its own, so without this one signed message ever seen
    (a log, a proxy) would authenticate any elements placed after it, for ever. Segment
    retries for up to 4 hours; a replay of older data must be sent unbatched."""
    first = document[0] if isinstance(document, list) and document else None
    sent = None
    if isinstance(first, dict):
        for name in ("receivedAt", "sentAt"):
            if isinstance(first.get(name), str):
                sent = parse_time_ms(first[name])
                if sent is not None:
                    break
    if sent is None:
        raise Rejected(401, "unauthorized", "A batch signed over its first element only needs "
                       "that element's receivedAt or sentAt, to tell it from a replay; send "
                       "the whole body signed, or include receivedAt in the mapping.")
    age_hours = (now * 1000 - sent) / 3_600_000
    # Either way: a host clock behind (or not yet believed after a correction) sees fresh
    # elements in the future; a replay is caught either way, the element's time being signed.
    if not -max_age_hours <= age_hours <= max_age_hours:
        raise Rejected(401, "unauthorized", "A batch signed over its first element only is "
                       f"accepted while that element is under {max_age_hours:g} hours old "
                       f"(SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS); its receivedAt/sentAt is "
                       f"{age_hours:.1f} hours from now.")


def first_element(body: bytes) -> bytes | None:
    """The exact bytes of the first element of a JSON array body, or None (not an array,
    or no element can be read)."""
    if not body.lstrip(WHITESPACE).startswith(b"["):
        return None
    try:
        text = body.decode("utf-8")
        start = text.index("[") + 1
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        _, end = json.JSONDecoder().raw_decode(text, start)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    # UTF-8 decodes and encodes back byte for byte, so these are the bytes Segment signed.
    return text[start:end].encode("utf-8")


# -- the messages -----------------------------------------------------------------------------


def take_batch(walks: WalksNeeded, messages: list[Any], org_id: int, store: Store,
               received_at: float) -> dict[str, Any]:
    """Check every message of a batch, store the sound ones; the answer lists each message's
    outcome in order. Rejected(503) when the store is down (Segment retries the batch, and
    what was stored of it is then a duplicate)."""
    if not messages:
        raise Rejected(400, "invalid_message", "The batch holds no message.")
    results: list[dict[str, Any] | None] = [None] * len(messages)
    to_store: list[tuple[int, dict[str, Any], str]] = []
    for index, message in enumerate(messages):
        try:
            call_type = checked(walks, message)
        except Rejected as rejection:
            results[index] = {"status": "rejected", **rejection.body}
            continue
        if isinstance(call_type, Taken):
            results[index] = call_type.answer()
            continue
        to_store.append((index, message, call_type))
    if to_store:
        with ThreadPoolExecutor(min(BATCH_STORE_THREADS, len(to_store))) as pool:
            outcomes = list(pool.map(lambda item: stored_or_rejection(
                item[1], item[2], org_id, store, received_at), to_store))
        unavailable = [taken for taken in outcomes
                       if isinstance(taken, Rejected) and taken.status >= 500]
        if unavailable:
            raise unavailable[0]
        for (index, _, _), taken in zip(to_store, outcomes, strict=True):
            results[index] = ({"status": "rejected", **taken.body}
                              if isinstance(taken, Rejected) else taken.answer())
    counts: dict[str, int] = {}
    for result in results:
        assert result is not None
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return {"status": "batch", "counts": counts, "results": results}


def take_message(walks: WalksNeeded, message: Any, org_id: int, store: Store,
                 received_at: float) -> Taken:
    """Check one message and store it, or say why it is ignored; Rejected otherwise."""
    call_type = checked(walks, message)
    if isinstance(call_type, Taken):
        return call_type
    taken = stored_or_rejection(message, call_type, org_id, store, received_at)
    if isinstance(taken, Rejected):
        raise taken
    return taken


def checked(walks: WalksNeeded, message: Any) -> str | Taken:
    """The message's call type when it is to be stored; Taken("ignored") with the reason
    when not; Rejected(400) when it is not a Segment message or holds what the store
    cannot carry (``walks``, from one look at the whole body, tells whether the message
    needs walking for that: looking at the body again for each message of a batch would
    cost messages × body size)."""
    try:
        return checked_message(walks, message)
    except Rejected as rejection:
        count(message.get("type") if isinstance(message, dict) else None,
              str(rejection.body["error"]))
        raise


def checked_message(walks: WalksNeeded, message: Any) -> str | Taken:
    """``checked`` without the counting of refusals."""
    if not isinstance(message, dict):
        raise Rejected(400, "invalid_message", "A Segment message must be a JSON object.")
    check_carriable(walks, message)
    try:
        call_type = check(message)
        ignored = loop_guard(message)
        if ignored is not None:
            count(call_type, "loop_guard")
            return Taken("ignored", reason=ignored, outcome="loop_guard")
        # Translated here only to check it can be (it is pure and cheap); delivery
        # translates the stored message again, so a translator fix applies to stored rows.
        translate(message, 0)
    except NotASegmentMessage as error:
        raise Rejected(400, "invalid_message", "Not a Segment message this service can read.",
                       fields={error.field_name: error.problem}) from None
    except NotRelayed as reason:
        count(message.get("type"), "ignored")
        return Taken("ignored", reason=str(reason))
    return call_type


def loop_guard(message: dict[str, Any]) -> str | None:
    """Why the message must not go to Drift (docs/segment-to-drift.md): this service sent it
    to Segment (Drift → Segment → Drift would echo), or its sender excluded Drift."""
    context = message.get("context")
    integration = context.get("integration") if isinstance(context, dict) else None
    if isinstance(integration, dict) and integration.get("name") == INTEGRATION["name"]:
        return f"sent to Segment by {INTEGRATION['name']} itself (loop guard)"
    # Events named like ours describe something that happened in Drift: sent by the browser
    # (/drift-segment.js, which cannot mark them) or by Drift's own Segment Source app.
    event = message.get("event")
    if message.get("type") == "track" and isinstance(event, str) \
            and event.startswith(EVENT_PREFIX):
        return f"a track named {EVENT_PREFIX!r}… happened in Drift (loop guard)"
    integrations = message.get("integrations")
    if not isinstance(integrations, dict):
        return None
    drift = integrations.get("Drift")
    if drift is False:
        return "integrations.Drift is false"
    if integrations.get("All") is False and drift is not True:
        return "integrations.All is false and integrations.Drift is not true"
    return None


def stored_or_rejection(message: dict[str, Any], call_type: str, org_id: int, store: Store,
                        received_at: float) -> Taken | Rejected:
    """Store a checked message (the stored form is compact JSON); its Taken, or the
    Rejected answer (400 for values the store refuses, 503 when it is down)."""
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    key = segment_dedupe_key(org_id, message, digest)
    try:
        stored_id = store.accept(org_id, event_type(call_type), key, payload,
                                 received_at=received_at)
    except SQLAlchemyError as error:
        taken: Taken | Rejected = storage_rejection(storage_error(error))
    except (StoreUnavailable, Unstorable) as error:
        taken = storage_rejection(error)
    else:
        taken = Taken("duplicate") if stored_id is None else Taken("accepted", stored_id)
    count(call_type, str(taken.body["error"]) if isinstance(taken, Rejected) else taken.status)
    return taken


def count(call_type: Any, outcome: str) -> None:
    """Count one message (or a request refused before any message was read)."""
    if call_type is None:
        label = "none"
    else:
        known = call_type in SEGMENT_TRANSLATORS or call_type in NOT_RELAYED
        label = call_type if isinstance(call_type, str) and known else "other"
    metrics.SEGMENT_WEBHOOKS.labels(type=label, outcome=outcome).inc()
