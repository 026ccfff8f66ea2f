"""Drift API lookups run beside the delivery round, never in its way (SPEC §5.8).

A round asks for the conversations its rows need and waits for them only briefly: rows that
need no lookup are sent meanwhile, and a row whose lookup is still running goes back to the
store without spending an attempt. The lookup carries on in its own thread; when it ends,
``on_done`` tells the delivery loop, which makes the waiting rows due again and hands each
the outcome when it is claimed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("drift_segment_source.lookups")

# Lookups running at once per delivery loop: enough for a burst of distinct conversations,
# few enough to stay well inside Drift's rate limit.
MAX_RUNNING = 8


class Lookups:
    """Runs each distinct lookup once at a time, in daemon threads, at most MAX_RUNNING."""

    def __init__(self, max_running: int = MAX_RUNNING,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._running: dict[tuple[Any, ...], Future[Any]] = {}
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._on_done = on_done

    def start(self, key: tuple[Any, ...], call: Callable[[], Any]) -> Future[Any] | None:
        """The future of ``call`` (shared by rows asking for the same ``key`` while it
        runs), or None when every slot is busy."""
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            if not self._slots.acquire(blocking=False):
                return None
            future: Future[Any] = Future()
            self._running[key] = future
        # Daemon threads: a lookup hanging on a slow Drift API never holds up shutdown.
        thread = threading.Thread(target=self._run, args=(key, call, future),
                                  name="drift-lookup", daemon=True)
        thread.start()
        return future

    def _run(self, key: tuple[Any, ...], call: Callable[[], Any], future: Future[Any]) -> None:
        try:
            result = call()
        except BaseException as error:  # the row that waits decides what the error means
            future.set_exception(error)
        else:
            future.set_result(result)
        finally:
            with self._lock:
                self._running.pop(key, None)
            self._slots.release()
            self._on_done()

    def running(self) -> int:
        """How many lookups are in flight (tests, metrics)."""
        with self._lock:
            return len(self._running)
