"""Per-customer data keys: generation, wrapping by the KEK, and cached unwrapping.

Key-provider failures are translated here, once: a ciphertext that fails authentication becomes ``IntegrityError``,
anything else the provider raises as ``ProviderUnavailable`` becomes ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence

from vault.crypto import CryptoError, SecretKey
from vault.errors import IntegrityError
from vault.keys.dek_cache import DekCache
from vault.keys.provider import KeyProvider, WrappedKey


class DataKeys:
    def __init__(self, provider: KeyProvider, cache: DekCache) -> None:
        self.provider = provider
        self.cache = cache

    def __repr__(self) -> str:
        return f"DataKeys(provider={self.provider.name})"

    def new_key(self) -> tuple[SecretKey, WrappedKey]:
        dek = SecretKey.generate()
        return dek, self.provider.wrap([dek])[0]

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
            for index, dek in zip(missing, fresh, strict=True):
                customer_id, wrapped = items[index]
                self.cache.put(customer_id, wrapped.blob, dek)
                found[index] = dek
        return [dek for dek in found if dek is not None]

    def forget(self, customer_id: str) -> None:
        self.cache.invalidate(customer_id)
