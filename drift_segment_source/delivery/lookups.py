"""Drift API lookups run beside the delivery round, never in its way (SPEC §5.8).

A round asks for the conversations its rows need and waits for them only briefly: rows that
need no lookup are sent meanwhile, and a row whose lookup is still running goes back to the
store without spending an attempt. The lookup carries on in its own thread; when it ends,
``on_done`` tells the delivery loop, which makes the waiting rows due again and hands each
the outcome when it is claimed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from drift_segment_source.deadlines import call_within

# Lookups running at once per delivery loop: enough for a burst of distinct conversations,
# few enough to stay well inside Drift's rate limit. Others queue, up to MAX_QUEUED.
MAX_RUNNING = 8
MAX_QUEUED = 10_000


class Lookups:
    """Runs each distinct lookup once at a time, in at most MAX_RUNNING daemon threads."""

    def __init__(self, max_running: int = MAX_RUNNING,
                 on_done: Callable[[], None] = lambda: None,
                 limit_seconds: float = 60.0) -> None:
        self._futures: dict[tuple[Any, ...], Future[Any]] = {}
        self._queue: deque[tuple[tuple[Any, ...], Callable[[], Any], Future[Any]]] = deque()
        self._threads = 0
        self._max_running = max_running
        self._lock = threading.Lock()
        self._on_done = on_done
        # A Drift API answering a byte at a time outlives every read timeout: past this,
        # the lookup fails (the row is retried) and its slot serves the next one.
        self._limit = limit_seconds

    def start(self, key: tuple[Any, ...], call: Callable[[], Any]) -> Future[Any] | None:
        """The future of ``call`` (shared by rows asking for the same ``key`` until it
        ends), or None when the queue is full."""
        with self._lock:
            known = self._futures.get(key)
            if known is not None:
                return known
            if len(self._queue) >= MAX_QUEUED:
                return None
            future: Future[Any] = Future()
            self._futures[key] = future
            self._queue.append((key, call, future))
            if self._threads >= self._max_running:
                return future
            self._threads += 1
        # Daemon threads: a lookup hanging on a slow Drift API never holds up shutdown.
        threading.Thread(target=self._work, name="drift-lookup", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._threads -= 1
                    return
                key, call, future = self._queue.popleft()
            try:
                result = call_within(self._limit, call)
            except BaseException as error:  # the row that waits decides what it means
                future.set_exception(error)
            else:
                future.set_result(result)
            finally:
                with self._lock:
                    self._futures.pop(key, None)
                self._on_done()

    def pending(self, key: tuple[Any, ...]) -> bool:
        """Whether a lookup of ``key`` is queued or in flight (``start`` would share it)."""
        with self._lock:
            return key in self._futures

    def running(self) -> int:
        """How many lookups are queued or in flight (tests, metrics)."""
        with self._lock:
            return len(self._futures)
