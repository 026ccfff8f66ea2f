"""Segment → Drift: a stored Segment message becomes Drift API writes.

Its writes run beside the round exactly like a lookup (the lookup threads, their limit, the
org's Drift API circuit), and the row is delivered once they are done.
"""

from __future__ import annotations

from drift_segment_source.clock import Clock
from drift_segment_source.destinations.drift import DriftWrites, NotYet
from drift_segment_source.drift_api import DriftApiError
from drift_segment_source.routing import NO_DRIFT_TOKEN, Held, Routing
from drift_segment_source.sources.drift.translators.base import receipt_ms
from drift_segment_source.sources.segment.translators import translate as drift_actions
from drift_segment_source.store.store import StoredWebhook

from .breakers import drift_key
from .lookups import DriftLookups
from .outcomes import Outcomes
from .rows import WAIT, Known, Waiting


class ToDrift:
    """Applies claimed Segment rows to Drift; whatever one raises is filed under it alone."""

    def __init__(self, routing: Routing, lookups: DriftLookups, writes: DriftWrites,
                 clock: Clock, unknown_user_retry_minutes: float) -> None:
        self.routing = routing
        self.lookups = lookups
        self.writes = writes
        self.clock = clock
        self.unknown_user_retry_minutes = unknown_user_retry_minutes

    def prepare(self, row: StoredWebhook, outcomes: Outcomes, waiting: list[Waiting],
                known: Known) -> None:
        """Start (or collect) the row's Drift writes; delivered once they are done."""
        try:
            actions = drift_actions(row.payload, receipt_ms(row.received_at))
            credentials = self.routing.drift_credentials(row.org_id)
            if credentials is None:
                raise Held(NO_DRIFT_TOKEN, "Segment → Drift writes need DRIFT_ACCESS_TOKEN")
            write = self.lookups.start(
                ("drift_write", row.org_id, row.id), known,
                lambda: self.writes.apply(row.org_id, actions, credentials), row.org_id)
            applied = self.lookups.outcome(row, write, known, outcomes, waiting)
            if applied is WAIT:
                return
            if isinstance(applied, NotYet):
                raise self.unknown_user(row, applied)
        except Exception as error:
            # A retryable failure here is the Drift API's: its rows are due when it recovers.
            outcomes.file(row.id, error, drift_key(row.org_id))
            return
        outcomes.delivered.append(row.id)

    def unknown_user(self, row: StoredWebhook, not_yet: NotYet) -> DriftApiError:
        """A user Drift does not know yet: retried until SEGMENT_UNKNOWN_USER_RETRY_MINUTES
        after receipt (the identify that creates the contact may be on its way), then dead."""
        minutes = self.unknown_user_retry_minutes
        if self.clock.wall() - row.received_at < minutes * 60:
            return DriftApiError(404, not_yet.reason, retryable=True)
        return DriftApiError(404, f"{not_yet.reason}; given up {minutes:g} min after receipt "
                                  "(SEGMENT_UNKNOWN_USER_RETRY_MINUTES)", retryable=False)
