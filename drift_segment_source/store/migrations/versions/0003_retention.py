"""retention: quarantine entries deduplicated by payload digest; held rows indexed

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

IS_HELD = sa.text("state = 'held'")


def upgrade() -> None:
    # Existing entries keep a null digest (many nulls never conflict); new ones are unique.
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("digest", sa.LargeBinary(length=16), nullable=True))
    op.create_index("quarantine_digest", "quarantine", ["digest"], unique=True)
    op.create_index("quarantine_received", "quarantine", ["received_at"])
    op.create_index("webhooks_held", "webhooks", ["queued_at"], sqlite_where=IS_HELD,
                    postgresql_where=IS_HELD)


def downgrade() -> None:
    op.drop_index("webhooks_held", table_name="webhooks")
    op.drop_index("quarantine_received", table_name="quarantine")
    op.drop_index("quarantine_digest", table_name="quarantine")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("digest")
