"""which rows were taken in without a write key

``webhooks.taken_in_dry_run`` is true for a row stored by a process without a Segment write key
(a dry run). Only such a row may end as ``dry_run``: a row taken in with a key that meets a
process without one (a restart without the key, a second service on the same store) is held
for the key instead. Rows stored before this revision count as taken in with a key, the side
that loses nothing.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("taken_in_dry_run", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("taken_in_dry_run")
