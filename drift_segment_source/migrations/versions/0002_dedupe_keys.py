"""dedupe keys kept apart from webhook rows, and the store's watermarks

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

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
    # Every event already stored keeps being a duplicate: copy its key over, in chunks.
    connection = op.get_bind()
    keys = sa.table("dedupe_keys", sa.column("digest", sa.LargeBinary),
                    sa.column("first_seen_at", sa.Float))
    last_id = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, dedupe_key, received_at FROM webhooks WHERE id > :last "
                    "ORDER BY id LIMIT :chunk"),
            {"last": last_id, "chunk": COPY_CHUNK},
        ).all()
        if not rows:
            break
        connection.execute(keys.insert(), [
            {"digest": bytes.fromhex(key[-32:]), "first_seen_at": received_at}
            for _, key, received_at in rows
        ])
        last_id = rows[-1][0]


def downgrade() -> None:
    op.drop_table("watermarks")
    op.drop_index("dedupe_keys_first_seen", table_name="dedupe_keys")
    op.drop_table("dedupe_keys")
