"""dedupe keys kept apart from webhook rows, and the store's watermarks

Every stored webhook keeps being a duplicate: its key is copied over, and so is the key
the same event has under this version's identities (meetings by eventId; events without
a time of their own by their receipt time), so an event stored before the upgrade and
sent again after it is not taken for a new one.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

from drift_segment_source.sources.drift.translators import TRANSLATORS, dedupe_key
from drift_segment_source.sources.drift.translators.base import receipt_ms

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


def digests(row: Any) -> Iterator[bytes]:
    """The row's stored key, and its event's key under this version's identities."""
    yield bytes.fromhex(row.dedupe_key[-32:])
    translator = TRANSLATORS.get(row.event_type)
    try:
        data = translator.reshape(json.loads(row.payload)["data"]) if translator else None
        if translator and data is not None:
            identity = translator.identity(data, receipt_ms(row.received_at))
            yield bytes.fromhex(dedupe_key(row.org_id, row.event_type, identity)[-32:])
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # stored data no translator reads today: its old key is all there is


def downgrade() -> None:
    op.drop_table("watermarks")
    op.drop_index("dedupe_keys_first_seen", table_name="dedupe_keys")
    op.drop_table("dedupe_keys")
