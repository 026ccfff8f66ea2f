"""segment secrets: each installed org's shared secret for /webhooks/segment/<orgId>

The secret is generated when an org installs the app, and stored encrypted like its tokens.
Orgs installed before this revision get theirs at their next install.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("segment_secret", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("segment_secret")
