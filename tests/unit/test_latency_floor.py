"""The latency floor holds every lookup answer back to the same moment, whatever the outcome."""

from __future__ import annotations

import pytest

from vault.customers.timing import LatencyFloor


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_quick_answer_waits_until_the_floor() -> None:
    clock = FakeClock()
    floor = LatencyFloor(0.004, clock.sleep, clock.monotonic)
    with floor.held():
        clock.now += 0.001
    assert clock.slept == [pytest.approx(0.003)]
    assert clock.now == pytest.approx(100.004)
    assert floor.overruns == 0


def test_a_failing_lookup_is_held_as_long_as_a_successful_one() -> None:
    clock = FakeClock()
    floor = LatencyFloor(0.004, clock.sleep, clock.monotonic)

    def refused() -> None:
        with floor.held():
            clock.now += 0.0005
            raise KeyError("restricted")

    with pytest.raises(KeyError):
        refused()
    assert clock.now == pytest.approx(100.004)


def test_work_longer_than_the_floor_is_not_delayed_further_and_is_counted() -> None:
    clock = FakeClock()
    floor = LatencyFloor(0.004, clock.sleep, clock.monotonic)
    with floor.held():
        clock.now += 0.010
    assert clock.slept == []
    assert floor.overruns == 1


def test_a_zero_floor_never_sleeps_and_a_negative_one_is_refused() -> None:
    clock = FakeClock()
    with LatencyFloor(0, clock.sleep, clock.monotonic).held():
        pass
    assert clock.slept == []
    with pytest.raises(ValueError, match="negative"):
        LatencyFloor(-0.001)
