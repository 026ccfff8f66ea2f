"""The service's clock believes a step of the host's wall clock only once it has held."""

from __future__ import annotations

import pytest

from drift_segment_source.clock import ADOPT_AFTER_SECONDS, SystemClock

DAY = 86_400.0


class HostClocks:
    """The host's wall and monotonic clocks, moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_750_000_000.0
        self.monotonic = 1_000.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds


@pytest.fixture
def host() -> HostClocks:
    return HostClocks()


@pytest.fixture
def clock(host: HostClocks) -> SystemClock:
    return SystemClock(lambda: host.wall, lambda: host.monotonic)


def test_the_wall_clock_follows_the_host_while_it_does_not_step(
        host: HostClocks, clock: SystemClock) -> None:
    host.tick(5)
    assert clock.wall() == host.wall
    host.wall += 0.5  # slewing, not a step
    assert clock.wall() == host.wall


def test_a_step_forward_for_a_few_seconds_is_never_believed(
        host: HostClocks, clock: SystemClock) -> None:
    before = clock.wall()
    host.wall += 100 * DAY
    host.tick(5)
    assert clock.wall() == pytest.approx(before + 5)
    host.wall -= 100 * DAY  # the host clock comes back
    host.tick(1)
    assert clock.wall() == pytest.approx(before + 6)
    assert clock.steps_adopted == 0


def test_a_step_back_is_not_believed_until_it_has_held(
        host: HostClocks, clock: SystemClock) -> None:
    before = clock.wall()
    host.wall -= 3600
    assert clock.wall() == pytest.approx(before), "the step is seen, not believed"
    host.tick(ADOPT_AFTER_SECONDS - 1)
    assert clock.wall() == pytest.approx(before + ADOPT_AFTER_SECONDS - 1)
    host.tick(2)
    assert clock.wall() == pytest.approx(host.wall)
    assert clock.steps_adopted == 1 and clock.last_adopted_step == pytest.approx(-3600)


def test_a_lasting_correction_forward_is_believed_after_it_has_held(
        host: HostClocks, clock: SystemClock) -> None:
    host.wall += 7 * DAY
    clock.wall()
    host.tick(ADOPT_AFTER_SECONDS)
    assert clock.wall() == pytest.approx(host.wall)
    assert clock.last_adopted_step == pytest.approx(7 * DAY)


def test_a_clock_that_keeps_jumping_is_never_believed(
        host: HostClocks, clock: SystemClock) -> None:
    start = clock.wall()
    for jump in range(1, 20):
        host.wall += 100 * jump  # a different step each time: none holds
        host.tick(ADOPT_AFTER_SECONDS / 2)
        assert clock.wall() == pytest.approx(start + jump * ADOPT_AFTER_SECONDS / 2)


def test_monotonic_time_is_the_hosts(host: HostClocks, clock: SystemClock) -> None:
    host.wall -= DAY
    assert clock.monotonic() == host.monotonic
