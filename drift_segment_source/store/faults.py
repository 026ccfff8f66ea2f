"""Fault injection by configuration: swap a backend for one
that fails, and watch the service keep its promises (tests and drills only)."""

from __future__ import annotations

from typing import Any

from .store import Store, StoreUnavailable


class UnavailableStore(Store):
    """A store whose web-side writes fail as if the database were down
    (``STORE_FAULT=unavailable``); delivery and operations work as usual."""

    def accept(self, *args: Any, **kwargs: Any) -> int | None:
        raise StoreUnavailable("injected fault (STORE_FAULT=unavailable)")

    def quarantine(self, *args: Any, **kwargs: Any) -> int:
        raise StoreUnavailable("injected fault (STORE_FAULT=unavailable)")


def make_store(store: Store, fault: str) -> Store:
    """The store, or a faulty one when ``STORE_FAULT`` names a fault."""
    if not fault:
        return store
    if fault == "unavailable":
        return UnavailableStore(store.engine, store.clock)
    raise ValueError(f"STORE_FAULT must be '' or 'unavailable', got {fault!r}")
