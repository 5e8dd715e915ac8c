"""The ``KeyProvider`` protocol every KEK home implements (local keyring, HashiCorp Vault Transit).

Failures a provider may raise, and nothing else:

- ``CryptoError`` (from ``vault.crypto``): a wrapped key failed authentication — wrong KEK, tampered, or below the
  minimum decryption version. Never retried.
- ``ProviderUnavailable``: the provider cannot be reached or refused the call (sealed, down, timed out, permission
  denied). The service maps it to UNAVAILABLE; nothing is written.
- ``ProviderConfigError``: start-up found the provider unusable; the message says what to fix and holds no secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vault.crypto import SecretKey


class ProviderUnavailable(Exception):
    """The key provider could not answer (unreachable, sealed, timed out, or the token lacks the policy)."""


class ProviderConfigError(Exception):
    """The key provider is misconfigured; the message names what to fix."""


class MinimumVersionRefused(Exception):
    """Raising the minimum decryption version was refused because keys are still wrapped under older versions."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """Key material encrypted under KEK ``kek_version``; ``blob`` is the provider's text form (``local:v1:…``)."""

    blob: str
    kek_version: int

    def __repr__(self) -> str:
        return f"WrappedKey(kek_version={self.kek_version}, blob=[secure])"


@dataclass(frozen=True, slots=True)
class KekStatus:
    """The KEK's versions as the provider sees them."""

    provider: str
    key_name: str
    latest_version: int
    min_decryption_version: int
    versions: tuple[int, ...]
    latest_created: float = 0.0  # Unix seconds when the latest version was created; 0 when unknown


class KeyProvider(Protocol):
    """Wraps and unwraps keys under a KEK that never leaves the provider. Calls are batched: one call, many keys."""

    name: str

    @property
    def calls(self) -> int:
        """How many calls this provider made to its backend (for the benchmark and metrics)."""
        ...

    def wrap(self, keys: Sequence[SecretKey]) -> list[WrappedKey]:
        """Wrap each key under the latest KEK version."""
        ...

    def unwrap(self, wrapped: Sequence[WrappedKey]) -> list[SecretKey]:
        """Unwrap each key."""
        ...

    def rewrap(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        """Re-encrypt each wrapped key under the latest KEK version without revealing it to the caller's storage."""
        ...

    def status(self) -> KekStatus:
        """Current versions (fresh from the backend)."""
        ...

    def rotate(self) -> int:
        """Create a new KEK version; new wraps use it. Returns the new latest version."""
        ...

    def set_min_decryption_version(self, version: int) -> None:
        """Refuse to unwrap anything wrapped under an older version (the caller checks nothing still needs it)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
