"""The one clock of the service: wall time for what is stored or shown, monotonic time for
durations, deadlines, breakers, probes and leases (see docs/architecture.md, "Time").

Every component that needs the time is handed a ``Clock``; tests hand in a fake one that they
move (and step) by hand, so nothing waits for real time and a step of the host clock can be
simulated.

The host's wall clock can step (a bad NTP server, a VM restored from a snapshot, an operator's
``date -s``). :class:`SystemClock` does not believe a step at once: it keeps counting from the
time it trusted, by the monotonic clock, until the stepped clock has held for
``ADOPT_AFTER_SECONDS``. So a clock that jumps months ahead for a few seconds stamps nothing,
schedules nothing and deletes nothing by the wrong time; a correction that lasts is adopted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("drift_segment_source.clock")

# Differences between the wall and monotonic clocks smaller than this are slewing, not steps.
STEP_TOLERANCE_SECONDS = 2.0
# How long a stepped wall clock must hold before it is believed.
ADOPT_AFTER_SECONDS = 600.0


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
    """The host's clocks, with wall-clock steps believed only once they have held."""

    def __init__(self, read_wall: Callable[[], float] = time.time,
                 read_monotonic: Callable[[], float] = time.monotonic) -> None:
        self._read_wall = read_wall
        self._read_monotonic = read_monotonic
        self._lock = threading.Lock()
        # wall - monotonic, as last trusted; and a step seen but not believed yet.
        self._offset = read_wall() - read_monotonic()
        self._step: tuple[float, float] | None = None  # (its offset, monotonic when seen)
        self.steps_adopted = 0  # how many steps were believed
        self.last_adopted_step = 0.0  # seconds, negative when the clock went back

    def monotonic(self) -> float:
        return self._read_monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))

    def wall(self) -> float:
        monotonic = self._read_monotonic()
        offset = self._read_wall() - monotonic
        with self._lock:
            if abs(offset - self._offset) <= STEP_TOLERANCE_SECONDS:
                self._offset = offset  # follow the clock's slewing
                self._step = None
                return monotonic + offset
            if self._step is None or abs(self._step[0] - offset) > STEP_TOLERANCE_SECONDS:
                self._step = (offset, monotonic)
                log.warning("the host clock stepped; the service keeps time by the monotonic "
                            "clock until the new time has held", extra={
                                "step_seconds": round(offset - self._offset, 3),
                                "believed_after_seconds": ADOPT_AFTER_SECONDS})
            elif monotonic - self._step[1] >= ADOPT_AFTER_SECONDS:
                self.last_adopted_step = offset - self._offset
                self.steps_adopted += 1
                log.warning("the host clock's step has held; it is believed now",
                            extra={"step_seconds": round(self.last_adopted_step, 3)})
                self._offset, self._step = offset, None
            return monotonic + self._offset


SYSTEM_CLOCK = SystemClock()
