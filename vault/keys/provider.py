"""The ``KeyProvider`` protocol every KEK home implements (local keyring, Vault Transit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vault.crypto import SecretKey


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """Key material encrypted under KEK ``kek_version``; ``blob`` is the provider's text form (``local:v1:…``)."""

    blob: str
    kek_version: int

    def __repr__(self) -> str:
        return f"WrappedKey(kek_version={self.kek_version}, blob=[secure])"


class KeyProvider(Protocol):
    """Wraps and unwraps keys under a KEK that never leaves the provider. Calls are batched: one call, many keys."""

    name: str

    def wrap(self, keys: Sequence[SecretKey]) -> list[WrappedKey]:
        """Wrap each key under the current KEK version."""
        ...

    def unwrap(self, wrapped: Sequence[WrappedKey]) -> list[SecretKey]:
        """Unwrap each key; raises ``CryptoError`` if one fails authentication, ``Unavailable`` if unreachable."""
        ...

    def current_version(self) -> int:
        """The KEK version new wraps use."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
