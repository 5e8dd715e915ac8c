"""A latency floor for identifier lookups, so that latency does not tell a stored identifier from an unknown one.

A find that hits does a little more work than one that misses (the audit event names the customer; the data key may
come from the cache or be unwrapped), even though a miss already decrypts and masks a decoy. Holding every answer
back until a fixed time after the lookup began hides what remains: as long as the work fits under the floor, both
answers leave at the floor plus the sleep's own jitter, which does not depend on the outcome. The floor costs latency,
not throughput: a held call sleeps without the GIL or a database connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class LatencyFloor:
    def __init__(
        self,
        seconds: float,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds < 0:
            raise ValueError("a latency floor cannot be negative")
        self.seconds = seconds
        self._sleep = sleep
        self._monotonic = monotonic
        self.overruns = 0  # lookups whose work alone took longer than the floor (the floor hid nothing for them)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Runs the block, then waits until ``seconds`` after it began — also when it raised."""
        if self.seconds <= 0:
            yield
            return
        started = self._monotonic()
        try:
            yield
        finally:
            remaining = self.seconds - (self._monotonic() - started)
            if remaining > 0:
                self._sleep(remaining)
            else:
                self.overruns += 1
