"""The one clock of the service: wall time for what is stored or shown, monotonic time for
durations, deadlines, breakers, probes and leases (see docs/architecture.md, "Time").

Every component that needs the time is handed a ``Clock``; tests hand in a fake one that they
move (and step) by hand, so nothing waits for real time and a step of the host clock can be
simulated.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where components read the time, and how they wait."""

    def wall(self) -> float:
        """Epoch seconds: for what is stored (receipt, due and finish times) or shown."""
        ...

    def monotonic(self) -> float:
        """Seconds that only move forward: for durations, deadlines, breakers and probes."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; whether it is set."""
        ...


class SystemClock:
    """The host's clocks."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
