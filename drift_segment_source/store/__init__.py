"""Stored before acknowledged: the accept path (``intake``), group commit (``commits``), the
tables and their migrations (``db``, ``migrations/``), quarantine, and the ``Store`` that
delivery claims rows from (``store``)."""
