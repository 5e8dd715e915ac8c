"""Per-principal lookup budgets."""

from __future__ import annotations

import pytest

from vault.auth.ratelimit import LookupLimiter
from vault.errors import ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_minute_budget_absorbs_a_burst_then_refills() -> None:
    clock = Clock()
    limiter = LookupLimiter(per_minute=60, per_day=0, clock=clock)
    for _ in range(60):
        limiter.take("pos")
    with pytest.raises(ResourceExhausted) as caught:
        limiter.take("pos")
    assert 0.9 < caught.value.retry_after_seconds <= 1.0  # one lookup a second refills
    limiter.take("crm")  # another principal has its own budget
    clock.now += 1.0
    limiter.take("pos")
    with pytest.raises(ResourceExhausted):
        limiter.take("pos")


def test_the_day_budget_caps_the_total_even_when_spread_out() -> None:
    clock = Clock()
    limiter = LookupLimiter(per_minute=10, per_day=50, clock=clock)
    taken = 0
    refusal: ResourceExhausted | None = None
    for _ in range(1000):
        try:
            limiter.take("pos")
        except ResourceExhausted as error:
            refusal = error
            break
        taken += 1
        clock.now += 6.0  # well within the minute budget
    assert 50 <= taken <= 52  # the day bucket refills a little over 6 s per lookup
    assert refusal is not None and refusal.retry_after_seconds > 60


def test_a_refused_lookup_spends_nothing() -> None:
    clock = Clock()
    limiter = LookupLimiter(per_minute=2, per_day=3, clock=clock)
    limiter.take("pos")
    limiter.take("pos")
    for _ in range(5):
        with pytest.raises(ResourceExhausted):
            limiter.take("pos")
    clock.now += 30.0  # one minute-token back; the day bucket still has one
    limiter.take("pos")


def test_zero_disables_a_window() -> None:
    limiter = LookupLimiter(per_minute=0, per_day=0, clock=Clock())
    assert not limiter.enabled
    for _ in range(10_000):
        limiter.take("pos")
