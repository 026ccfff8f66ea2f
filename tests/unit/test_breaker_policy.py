"""The circuit-breaker policy on its own clock: probes come less often from a host that
hangs, and one at a time."""

from __future__ import annotations

import pytest

from drift_segment_source.delivery.breakers import (
    HUNG_PROBE_MAX_SECONDS,
    KEY_LENGTH,
    PARK_SECONDS,
    PROBE_FLIGHT_LIMIT_SECONDS,
    PROBE_SECONDS,
    Breakers,
    segment_key,
)

from ..support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_probes_a_host_does_not_answer_come_less_and_less_often() -> None:
    """A hung probe holds its round for the whole timeout; refused ones cost nothing."""
    clock = FakeClock()
    breakers = Breakers(lambda key, opened_at: None, clock=clock)
    assert breakers.failed("segment:x", {1}, hung=True)  # opens at the first timeout
    waits = []
    for _ in range(7):
        waits.append(round(breakers.probe_in("segment:x")))
        clock.advance(breakers.probe_in("segment:x"))
        assert breakers.allows("segment:x", {1})
        breakers.failed("segment:x", {1}, hung=True)
    assert waits == [2, 4, 8, 16, 32, HUNG_PROBE_MAX_SECONDS, HUNG_PROBE_MAX_SECONDS]
    clock.advance(breakers.probe_in("segment:x"))
    assert breakers.allows("segment:x", {1})
    breakers.failed("segment:x", {1})  # refused at once: back to the short wait
    assert breakers.probe_in("segment:x") == PROBE_SECONDS


def test_one_probe_at_a_time_even_when_it_outlasts_the_probe_interval() -> None:
    clock = FakeClock()
    breakers = Breakers(lambda key, opened_at: None, clock=clock)
    breakers.failed("segment:x", {1}, hung=True)
    clock.advance(PROBE_SECONDS)
    assert breakers.allows("segment:x", {1})  # the probe
    clock.advance(PROBE_SECONDS * 5)
    assert not breakers.allows("segment:x", {1}), "the probe is still in flight"
    breakers.not_probed("segment:x")  # it was not made after all (the round ran out)
    assert breakers.allows("segment:x", {1})
    clock.advance(PROBE_FLIGHT_LIMIT_SECONDS)  # a probe that never reported stops counting
    assert breakers.allows("segment:x", {1})
    breakers.succeeded("segment:x")
    assert breakers.allows("segment:x", {1}) and not breakers.is_open("segment:x")



def test_rows_behind_an_open_circuit_wait_for_the_probe_one_at_a_time() -> None:
    clock = FakeClock()
    breakers = Breakers(lambda key, opened_at: None, clock=clock)
    for _ in range(3):
        breakers.failed("segment:x", {1}, hung=False)
    assert breakers.is_open("segment:x")
    assert breakers.park_seconds("segment:x", keep_for_probe=True) <= PROBE_SECONDS
    assert breakers.park_seconds("segment:x", keep_for_probe=False) == PARK_SECONDS
    assert breakers.park_seconds("segment:closed", keep_for_probe=False) == PARK_SECONDS


@pytest.mark.parametrize("host", [
    "https://api.segment.io",
    "https://segment-proxy.internal.example.com/tenants/eu-west-1/api",
    "https://" + "ü" * 300,
])
def test_each_segment_source_has_a_circuit_key_of_its_own_that_the_store_keeps_whole(
        host: str) -> None:
    keys = {segment_key(host, "write-key-a"), segment_key(host, "write-key-b"),
            segment_key(host + "/other", "write-key-a")}
    assert len(keys) == 3
    assert all(len(key) <= KEY_LENGTH for key in keys)
    assert segment_key(host, "write-key-a") == segment_key(host, "write-key-a")
