"""The delivery engine's settings, typed once from the declared settings (config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeliverySettings:
    """What the delivery loop, its lanes and its lookups are tuned by."""

    batch_size: int = 500
    poll_seconds: float = 0.5
    lease_seconds: float = 60.0
    max_attempts: int = 300
    max_age_hours: float = 72.0
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 900.0
    segment_timeout_seconds: float = 15.0
    drift_timeout_seconds: float = 10.0
    lookup_wait_seconds: float = 0.25
    unknown_user_retry_minutes: float = 60.0
    # The longest a round waits for its lanes (not a declared setting: a tuning of the engine
    # that tests shorten): a healthy Segment answers well within it.
    lane_wait_seconds: float = 2.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DeliverySettings:
        """The delivery settings among the service's settings (already parsed)."""
        return cls(
            batch_size=settings["DELIVERY_BATCH_SIZE"],
            poll_seconds=settings["DELIVERY_POLL_SECONDS"],
            lease_seconds=settings["DELIVERY_LEASE_SECONDS"],
            max_attempts=settings["DELIVERY_MAX_ATTEMPTS"],
            max_age_hours=settings["DELIVERY_MAX_AGE_HOURS"],
            backoff_seconds=settings["DELIVERY_BACKOFF_SECONDS"],
            backoff_max_seconds=settings["DELIVERY_BACKOFF_MAX_SECONDS"],
            segment_timeout_seconds=settings["SEGMENT_TIMEOUT_SECONDS"],
            drift_timeout_seconds=settings["DRIFT_TIMEOUT_SECONDS"],
            lookup_wait_seconds=settings["DELIVERY_LOOKUP_WAIT_SECONDS"],
            unknown_user_retry_minutes=settings["SEGMENT_UNKNOWN_USER_RETRY_MINUTES"],
        )

    @property
    def lookup_limit_seconds(self) -> float:
        """The longest a Drift API lookup may take (two tries), after which it fails."""
        return 2 * self.drift_timeout_seconds + 1


@dataclass(frozen=True)
class RetentionSettings:
    """How long each state of a row is kept (see docs/reliability.md, "Retention")."""

    delivered_days: float = 7.0
    interval_seconds: float = 600.0
    dedupe_days: float = 90.0
    held_max_age_hours: float = 168.0
    dead_letter_days: float = 30.0
    quarantine_days: float = 30.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RetentionSettings:
        """The retention settings among the service's settings (already parsed)."""
        return cls(
            delivered_days=settings["RETENTION_DAYS"],
            interval_seconds=settings["RETENTION_INTERVAL_SECONDS"],
            dedupe_days=settings["DEDUPE_RETENTION_DAYS"],
            held_max_age_hours=settings["HELD_MAX_AGE_HOURS"],
            dead_letter_days=settings["DEAD_LETTER_RETENTION_DAYS"],
            quarantine_days=settings["QUARANTINE_RETENTION_DAYS"],
        )
