"""Per-principal lookup budgets, so that no token can enumerate the phone-number space through FindCustomers.

Two token buckets per principal: a per-minute budget absorbs a burst (a store opening, a batch reconciliation) and a
per-day budget caps the total. Mainland mobile numbers span about 1.6 billion values; at the default 100,000 lookups a
day a stolen token would need some 44 years to walk them. Budgets are kept per server process: with P processes on R
replicas a principal gets up to P x R times the configured figures, which the README tells operators to account for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vault.errors import ResourceExhausted

_MAX_PRINCIPALS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class LookupLimiter:
    """``take(principal)`` spends one lookup or raises ``ResourceExhausted``. A limit of 0 disables that window."""

    def __init__(self, per_minute: int, per_day: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._windows = tuple(
            (float(limit), limit / seconds) for limit, seconds in ((per_minute, 60.0), (per_day, 86_400.0)) if limit > 0
        )
        self._clock = clock
        self._buckets: dict[str, list[_Bucket]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._windows)

    def take(self, principal: str) -> None:
        if not self._windows:
            return
        now = self._clock()
        with self._lock:
            buckets = self._buckets.get(principal)
            if buckets is None:
                if len(self._buckets) >= _MAX_PRINCIPALS:
                    self._buckets.clear()  # bounded memory; principals are few in practice
                buckets = [_Bucket(capacity, now) for capacity, _ in self._windows]
                self._buckets[principal] = buckets
            wait = 0.0
            for bucket, (capacity, rate) in zip(buckets, self._windows, strict=True):
                bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
                bucket.stamp = now
                if bucket.tokens < 1.0:
                    wait = max(wait, (1.0 - bucket.tokens) / rate)
            if wait > 0:
                raise ResourceExhausted(wait)
            for bucket in buckets:
                bucket.tokens -= 1.0
