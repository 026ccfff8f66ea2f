"""Alembic environment: migrations run on the connection ``store.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from drift_segment_source.store.db import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
