"""When and how long the client waits before sending a call again."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: each wait is uniform in ``[0, min(max_backoff, initial * multiplier**n)]``.

    Only ``codes`` are retried, and only for calls that are safe to repeat (see ``piivault.client``): UNAVAILABLE is
    what a lost connection, a restarting server or an outage of the vault's database or key service looks like, and
    the call may or may not have been carried out — which is why only idempotent calls are repeated. Every attempt
    shares the call's one deadline: the retries never make a call take longer than its timeout.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be 1 or more")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must not be negative and the multiplier must be 1 or more")
        unsafe = self.codes - _RETRYABLE
        if unsafe:
            names = ", ".join(sorted(code.name for code in unsafe))
            raise ValueError(f"{names} cannot be retried: only UNAVAILABLE and RESOURCE_EXHAUSTED are transient")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """Send every call once."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return (rng or _RNG).uniform(0.0, ceiling)


# RESOURCE_EXHAUSTED may be opted into (a spent lookup budget refills); nothing else is transient.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_RNG = random.SystemRandom()
