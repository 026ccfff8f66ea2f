"""Fault injection by configuration, as Mozilla Antenna does it: swap a backend for one
that fails, and watch the service keep its promises (tests and drills only)."""

from __future__ import annotations

from typing import Any

from .store import Store, StoreUnavailable


class FaultyStore:
    """A store whose writes from the web side fail (``STORE_FAULT=unavailable``)."""

    def __init__(self, store: Store, fault: str) -> None:
        if fault != "unavailable":
            raise ValueError(f"STORE_FAULT must be 'unavailable', got {fault!r}")
        self._store = store

    def accept(self, *args: Any, **kwargs: Any) -> int | None:
        raise StoreUnavailable("injected fault (STORE_FAULT=unavailable)")

    def quarantine(self, *args: Any, **kwargs: Any) -> int:
        raise StoreUnavailable("injected fault (STORE_FAULT=unavailable)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
