"""why a row waits as data; server-side setup grants; refused webhooks per minute

- ``webhooks.wait_reason`` says why a pending row is not being delivered yet, in a fixed
  vocabulary (``backoff``, ``parked``, ``lookup``, ``deferred``), and ``webhooks.waiting_on``
  names the destination a parked row waits for (its circuit's key). Error text is for people.
  Rows parked before this revision are recognised once, here, by the text they carried.
- ``setup_grants``: the app-mode setup page is opened by a grant kept in the store (the
  cookie holds only its random token), so it can be used once and revoked.
- ``refused_webhooks``: webhooks refused for a wrong or missing token, counted per minute and
  reason, so every surface can say "refused in the last hour" from one place.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The texts parked rows carried before this revision (frozen here: never import the app).
PARKED_PREFIXES = ("waiting for Segment%", "waiting for the Drift API%")


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("wait_reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("waiting_on", sa.String(length=100), nullable=True))
    op.create_table(
        "setup_grants",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("org_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("setup_grants_org", "setup_grants", ["org_id"])
    op.create_table(
        "refused_webhooks",
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "reason"),
    )
    connection = op.get_bind()
    # Parked rows keep no destination key (it was never stored): they are due within a probe
    # interval anyway, and the next round parks them again under their destination.
    connection.execute(sa.text(
        "UPDATE webhooks SET wait_reason = 'parked' WHERE state = 'pending' "
        "AND (last_error LIKE :segment OR last_error LIKE :drift)"),
        {"segment": PARKED_PREFIXES[0], "drift": PARKED_PREFIXES[1]})
    connection.execute(sa.text(
        "UPDATE webhooks SET wait_reason = 'backoff' WHERE state = 'pending' "
        "AND wait_reason IS NULL AND last_error IS NOT NULL"))


def downgrade() -> None:
    op.drop_table("refused_webhooks")
    op.drop_index("setup_grants_org", table_name="setup_grants")
    op.drop_table("setup_grants")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("waiting_on")
        batch.drop_column("wait_reason")
