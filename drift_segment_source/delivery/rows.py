"""What the delivery engine carries a claimed row in, between preparing and recording it."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from drift_segment_source.routing import Destination
from drift_segment_source.store.store import StoredWebhook

# The lookups a row has started or waited for, by key: their outcome is the row's.
Known = dict[tuple[Any, ...], Future[Any]]


@dataclass
class Prepared:
    """A row ready to send: its messages, where they go, and (identity stitching) the
    identify linking its contact to a user, with the key that records it was sent."""

    row: StoredWebhook
    destination: Destination
    messages: list[dict[str, Any]]
    link: tuple[bytes, dict[str, Any]] | None = None


@dataclass
class Waiting:
    """A row whose Drift API lookup was still running when the round reached it."""

    row: StoredWebhook
    lookup: Future[Any]
    known: Known


class Busy:
    """The lookup queue is full: the row is tried again in a moment."""


BUSY = Busy()


class Wait:
    """A row's lookup still runs: the row waits for it (see Waiting)."""


WAIT = Wait()


def done(result: Any) -> Future[Any]:
    """A finished future holding ``result`` (a cached lookup)."""
    future: Future[Any] = Future()
    future.set_result(result)
    return future
