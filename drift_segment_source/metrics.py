"""Prometheus metrics. Every metric is listed with its meaning in ``docs/metrics.md``.

Under gunicorn several processes count; ``PROMETHEUS_MULTIPROC_DIR`` (set by the gunicorn
config before the workers fork) makes ``/metrics`` add them up. Backlog figures are read
from the store at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .store.store import Store

PREFIX = "drift_segment_source_"

WEBHOOKS = Counter(
    PREFIX + "webhooks_total",
    "Webhooks received at /webhooks/drift, by Drift event type and what they got.",
    ["type", "outcome"],
)
SEGMENT_WEBHOOKS = Counter(
    PREFIX + "segment_webhook_messages_total",
    "Segment messages received at /webhooks/segment, by Segment call type and what they got.",
    ["type", "outcome"],
)
DELIVERIES = Counter(
    PREFIX + "deliveries_total",
    "Stored webhooks leaving a delivery round, by outcome.",
    ["outcome"],
)
SEGMENT_BATCHES = Counter(
    PREFIX + "segment_batches_total",
    "Batches posted to Segment, by HTTP status (or 'network' when no answer came).",
    ["status"],
)
SEGMENT_MESSAGES = Counter(
    PREFIX + "segment_messages_total",
    "Segment messages confirmed by a 2xx answer.",
)
DELIVERY_LATENCY = Histogram(
    PREFIX + "delivery_latency_seconds",
    "From receipt of a webhook to Segment's 2xx for its messages.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
DROPPED = Counter(
    PREFIX + "dropped_total",
    "What retention removed or gave up on, by kind (logged before it goes).",
    ["what"],
)
DRIFT_API_CALLS = Counter(
    PREFIX + "drift_api_requests_total",
    "Calls to the Drift API, by endpoint and HTTP status (or 'network').",
    ["endpoint", "status"],
)



def type_label(event_type: str | None, known: bool) -> str:
    """The ``type`` label: relayed types by name, anything else ``other`` (so a sender cannot
    grow the number of time series without bound), ``none`` when no envelope was read."""
    if event_type is None:
        return "none"
    return event_type if known else "other"


class BacklogCollector(Collector):
    """Backlog size and age, read from the store when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        count, oldest = self.store.backlog()
        yield GaugeMetricFamily(PREFIX + "backlog_webhooks",
                                "Stored webhooks waiting for delivery (state pending).",
                                value=count)
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest)
        yield GaugeMetricFamily(PREFIX + "oldest_pending_age_seconds",
                                "Age of the oldest webhook waiting for delivery.", value=age)
        opened = self.store.open_breakers()
        circuits = GaugeMetricFamily(PREFIX + "open_circuits",
                                     "Destinations whose circuit breaker is open, by kind.",
                                     labels=["destination"])
        for kind in ("segment", "drift"):
            circuits.add_metric([kind], sum(key.startswith(kind + ":") for key in opened))
        yield circuits
        by_state = GaugeMetricFamily(PREFIX + "stored_webhooks",
                                     "Stored webhooks waiting, by event type and state "
                                     "(pending, held, dead).",
                                     labels=["type", "state"])
        for (event_type, state), number in sorted(self.store.waiting_counts().items()):
            by_state.add_metric([event_type, state], number)
        yield by_state


def store_gauges(store: Store) -> bytes:
    """The gauges read from the store (each count on a partial index: see Store)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BacklogCollector(store))
    return generate_latest(registry)


def exposition(store: Store) -> tuple[bytes, str]:
    """The text ``/metrics`` serves: process counters (all workers) plus the backlog."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    return counters + store_gauges(store), CONTENT_TYPE_LATEST
