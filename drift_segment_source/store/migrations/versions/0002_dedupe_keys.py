"""dedupe keys kept apart from webhook rows, and the store's watermarks

Every stored webhook keeps being a duplicate: its key is copied over, and so is the key
the same event has under this version's identities (meetings by eventId; events without
a time of their own by their receipt time), so an event stored before the upgrade and
sent again after it is not taken for a new one.

The version before this one pruned delivered rows, and their keys with them, after
RETENTION_DAYS: what it pruned cannot be known here. So a store that existed before this
revision, and no longer holds every row it stored, gets a conservative dedupe horizon: the
oldest finish time of the delivered rows it still holds (every row finished before that may
have been pruned), or the upgrade's own time when it holds none. Events before the horizon
are refused rather than sent twice.

The identities below are frozen copies of the translators' as of this revision: a
migration never imports application code, which goes on changing after it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COPY_CHUNK = 5000


def upgrade() -> None:
    op.create_table(
        "dedupe_keys",
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("dedupe_keys_first_seen", "dedupe_keys", ["first_seen_at"])
    op.create_table(
        "watermarks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    connection = op.get_bind()
    keys = sa.table("dedupe_keys", sa.column("digest", sa.LargeBinary),
                    sa.column("first_seen_at", sa.Float))
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    last_id = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, org_id, event_type, dedupe_key, payload, received_at "
                    "FROM webhooks WHERE id > :last ORDER BY id LIMIT :chunk"),
            {"last": last_id, "chunk": COPY_CHUNK},
        ).all()
        if not rows:
            break
        found = {digest: row.received_at for row in rows for digest in digests(row)}
        connection.execute(insert(keys).on_conflict_do_nothing(index_elements=["digest"]),
                           [{"digest": digest, "first_seen_at": seen}
                            for digest, seen in found.items()])
        last_id = rows[-1].id
    record_conservative_horizon(connection)


def digests(row: Any) -> Iterator[bytes]:
    """The row's stored key, and its event's key under this revision's identities."""
    yield bytes.fromhex(row.dedupe_key[-32:])
    identity = IDENTITIES.get(row.event_type)
    try:
        data = json.loads(row.payload)["data"]
        if identity is not None and isinstance(data, dict):
            if row.event_type in FLATTENED and isinstance(data.get("data"), dict):
                data = {**{k: v for k, v in data.items() if k != "data"}, **data["data"]}
            values = identity(data, int(round(row.received_at * 1000)))
            yield bytes.fromhex(dedupe_key(row.org_id, row.event_type, values)[-32:])
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # stored data no identity reads: its old key is all there is


def record_conservative_horizon(connection: Any) -> None:
    """A store that existed before this revision may have pruned rows and their keys: the
    oldest finish time of the delivered rows it kept bounds what may be gone. A store that
    still holds every row it ever stored (ids 1 to the highest, none missing) pruned nothing."""
    attributes = context.config.attributes
    if attributes.get("starting_revision") is None:
        return  # a new store: nothing was ever pruned
    count, highest = connection.execute(sa.text("SELECT count(*), max(id) FROM webhooks")).one()
    if highest is not None and int(count) == int(highest):
        return  # every row ever stored is still here
    oldest_kept = connection.execute(sa.text(
        "SELECT min(finished_at) FROM webhooks WHERE state IN ('delivered', 'dry_run')"
    )).scalar()
    now = float(attributes.get("now") or connection.execute(sa.text(
        "SELECT max(received_at) FROM webhooks")).scalar() or 0.0)
    horizon = min(float(oldest_kept), now) if oldest_kept is not None else now
    if horizon > 0:
        connection.execute(sa.text(
            "INSERT INTO watermarks (name, value) VALUES ('dedupe_horizon', :value)"),
            {"value": horizon})


# -- the identities of Drift events as of this revision (frozen) ---------------------------

CANONICAL_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
FLATTENED = {"conversation_push", "conversation_participant_added",
             "conversation_participant_removed"}
CONTACT_TRAITS = ("email", "name", "phone", "externalId")
Identity = Callable[[dict[str, Any], int], list[Any]]


def dedupe_key(org_id: int, event_type: str, identity: list[Any]) -> str:
    """The key an event is stored under (the messageId basis without a call index)."""
    key = CANONICAL_JSON.encode([org_id, event_type, *identity, -1])
    return f"drift-{event_type}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}"


def present(source: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields that are present and not null."""
    return {name: source[name] for name in names if source.get(name) is not None}


def contact_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """contact_identified's traits, from ``attributes`` or beside the id."""
    return {**present(data, CONTACT_TRAITS), **present(data.get("attributes") or {},
                                                       CONTACT_TRAITS)}


def booking(data: dict[str, Any]) -> list[Any]:
    """A meeting by its eventId, else its contact, agent and time."""
    if data.get("eventId") is not None:
        return [data["eventId"]]
    contact = data["contactId"] if data.get("contactId") is not None else data["schedulerId"]
    return [contact, data.get("agentId"), data.get("scheduledAt")]


def contact_updated(data: dict[str, Any], received_ms: int) -> list[Any]:
    """The contact, the change's time, and a digest of the changes."""
    kept = [{key: change[key] for key in ("name", "previous", "updated") if key in change}
            for change in data["diff"]]
    changes = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    when = data["timestamp"] if data.get("timestamp") is not None else received_ms
    return [data["endUserId"], when, hashlib.sha256(changes.encode()).hexdigest()]


def button_clicked(data: dict[str, Any], received_ms: int) -> list[Any]:
    """The Message id, else its conversation, author, time and text."""
    if data.get("id") is not None:
        return [data["id"]]
    return [data["conversationId"], data["author"]["id"], data.get("createdAt"), data.get("body")]


def participants(list_name: str) -> Identity:
    """A participant change by conversation, time (else receipt) and who."""
    return lambda data, received_ms: [
        data["conversationId"],
        data["changedAt"] if data.get("changedAt") is not None else received_ms,
        sorted(map(str, data.get(list_name) or [])),
    ]


def phone_contact(data: dict[str, Any]) -> Any:
    """The contact a phone_captured names itself, if any."""
    if data.get("contactId") is not None:
        return data["contactId"]
    if data.get("authorType") == "contact" and data.get("authorId") is not None:
        return data["authorId"]
    return None


IDENTITIES: dict[str, Identity] = {
    "new_conversation": lambda data, received_ms: [data["id"]],
    "button_clicked": button_clicked,
    "conversation_push": lambda data, received_ms: [
        data["conversationId"],
        data["pushedAt"] if data.get("pushedAt") is not None else received_ms,
        data.get("source")],
    "contact_updated": contact_updated,
    "new_meeting": lambda data, received_ms: booking(data),
    "meeting_updated": lambda data, received_ms: [
        *booking(data), data.get("eventType"), data.get("updatedAt") or received_ms],
    "conversation_participant_removed": participants("removedParticipants"),
    "conversation_participant_added": participants("addedParticipants"),
    "playbook_goal_met": lambda data, received_ms: [
        data["conversationId"], data.get("playbookId"), data.get("goalId")],
    "phone_captured": lambda data, received_ms: [
        data.get("conversationId"), phone_contact(data), data["phoneNumber"]],
    "contact_identified": lambda data, received_ms: [
        data["endUserId"] if data.get("endUserId") is not None else data["id"],
        contact_attributes(data).get("email"), contact_attributes(data).get("externalId")],
}


def downgrade() -> None:
    op.drop_table("watermarks")
    op.drop_index("dedupe_keys_first_seen", table_name="dedupe_keys")
    op.drop_table("dedupe_keys")
