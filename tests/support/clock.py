"""A clock the tests move by hand, with the shape of the service's ``Clock`` (``wall()``,
``monotonic()``, ``wait(event, seconds)``). It never sleeps: waiting moves it on."""

from __future__ import annotations

import threading

# In the past of the host's clock: the store never takes a cut-off from a time ahead of the
# database's own clock (on SQLite, the host's), so a clock in the future would stop retention.
START_WALL = 1_750_000_000.0
START_MONOTONIC = 1_000.0


class FakeClock:
    """Wall and monotonic time that move only when told: ``advance`` moves both (time
    passes), ``step_wall`` only the wall clock (the host's clock was set)."""

    def __init__(self, wall: float = START_WALL, monotonic: float = START_MONOTONIC) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def wall(self) -> float:
        """Epoch seconds."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """Seconds that only move forward."""
        with self._lock:
            return self._monotonic

    def __call__(self) -> float:
        """The wall time: components that take the clock as a function read this."""
        return self.wall()

    @property
    def now(self) -> float:
        """The wall time (read-only: move it with advance or step_wall)."""
        return self.wall()

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move on."""
        with self._lock:
            self._wall += seconds
            self._monotonic += seconds

    def step_wall(self, seconds: float) -> None:
        """The host's clock is set forward (or back, negative): only the wall clock moves."""
        with self._lock:
            self._wall += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Whether ``event`` is set; when it is not, the clock moves on by ``seconds``
        instead of sleeping."""
        if event.is_set():
            return True
        self.advance(max(0.0, seconds))
        return event.is_set()
