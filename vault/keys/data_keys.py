"""Per-customer data keys: generation, wrapping by the KEK, and cached unwrapping.

The key provider is called per *batch of keys*, never per field: new DEKs are generated and wrapped ``pool_size`` at a
time (one Transit call per ``pool_size`` creates), and a list of customers is unwrapped in one call for the cache
misses. Unwrapped DEKs waiting in the pool live only in memory and are dropped when the KEK version changes.

Provider failures are translated here, once: a wrapped key that fails authentication becomes ``IntegrityError``;
an unreachable provider becomes ``Unavailable`` (nothing has been written when that happens: wrapping runs before the
write transaction opens).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from vault.crypto import CryptoError, SecretKey
from vault.errors import IntegrityError, Unavailable
from vault.keys.dek_cache import DekCache
from vault.keys.provider import KeyProvider, ProviderUnavailable, WrappedKey

DEFAULT_POOL_SIZE = 64
# Pooled DEKs older than this are discarded, so that after a KEK rotation elsewhere (another process or replica) new
# customers stop being wrapped under the old version within this many seconds.
POOL_MAX_AGE_SECONDS = 30.0


class DataKeys:
    def __init__(
        self,
        provider: KeyProvider,
        cache: DekCache,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.cache = cache
        self._pool_size = pool_size
        self._pool: list[tuple[SecretKey, WrappedKey]] = []
        self._pool_filled = 0.0
        self._pool_lock = threading.Lock()
        self._refill_failed = float("-inf")
        self._clock = clock

    def __repr__(self) -> str:
        return f"DataKeys(provider={self.provider.name}, pooled={len(self._pool)})"

    def new_key(self) -> tuple[SecretKey, WrappedKey]:
        """A fresh random DEK and its wrapped form, from the pool (refilled with one provider call when empty).

        Callers that queued behind a refill that failed fail with it, instead of each trying again in turn: with a
        hanging provider, N queued creates would otherwise wait N provider deadlines, not one.
        """
        arrived = self._clock()
        with self._pool_lock:
            if not self._pool or self._clock() - self._pool_filled > POOL_MAX_AGE_SECONDS:
                if self._refill_failed > arrived:
                    raise Unavailable()
                fresh = [SecretKey.generate() for _ in range(max(1, self._pool_size))]
                try:
                    self._pool = list(zip(fresh, self.provider.wrap(fresh), strict=True))
                except ProviderUnavailable:
                    self._refill_failed = self._clock()
                    raise Unavailable() from None
                self._pool_filled = self._clock()
            return self._pool.pop()

    def drain_pool(self) -> None:
        """Forget pooled DEKs (after a KEK rotation, so new customers start on the new version)."""
        with self._pool_lock:
            self._pool.clear()

    def unwrap(self, customer_id: str, wrapped: WrappedKey) -> SecretKey:
        return self.unwrap_many([(customer_id, wrapped)])[0]

    def unwrap_many(self, items: Sequence[tuple[str, WrappedKey]]) -> list[SecretKey]:
        """Unwrap many DEKs with at most one provider call (for the cache misses)."""
        found: list[SecretKey | None] = [self.cache.get(cid, wrapped.blob) for cid, wrapped in items]
        missing = [index for index, dek in enumerate(found) if dek is None]
        if missing:
            try:
                fresh = self.provider.unwrap([items[index][1] for index in missing])
            except CryptoError:
                raise IntegrityError() from None
            except ProviderUnavailable:
                raise Unavailable() from None
            for index, dek in zip(missing, fresh, strict=True):
                customer_id, wrapped = items[index]
                self.cache.put(customer_id, wrapped.blob, dek)
                found[index] = dek
        return [dek for dek in found if dek is not None]

    def forget(self, customer_id: str) -> None:
        self.cache.invalidate(customer_id)
