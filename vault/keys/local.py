"""The embedded default KEK home: a keyring file under the data directory, or a KEK given in the environment.

The file holds every KEK version (older versions stay so that DEKs wrapped under them can be unwrapped until they are
rewrapped). It is created with mode 0600, and start-up refuses a keyring that group or others can read, as ssh does
with private keys: a readable keyring defeats the encryption of every field.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from vault.crypto import CryptoError, KeyWrapCipher, SecretKey
from vault.keys.provider import WrappedKey

_PREFIX = "local"
_WRAP_AAD = b"piivault/wrapped-key/v1"
_FORMAT = "piivault-keyring/1"


class KeyringError(Exception):
    """The keyring cannot be used (missing, malformed, or its permissions are too open)."""


class LocalKeyringProvider:
    """KEK versions held in memory, loaded from a 0600 file or from ``PIIVAULT_LOCAL_KEK``."""

    name = "local"

    def __init__(self, versions: dict[int, SecretKey], path: Path | None = None) -> None:
        if not versions:
            raise KeyringError("keyring holds no key")
        self._ciphers = {version: KeyWrapCipher(key) for version, key in versions.items()}
        self._keys = dict(versions)
        self._current = max(versions)
        self._path = path

    def __repr__(self) -> str:
        return f"LocalKeyringProvider(versions={sorted(self._ciphers)}, keys=[secure])"

    @classmethod
    def from_env_kek(cls, encoded: str) -> LocalKeyringProvider:
        try:
            material = base64.b64decode(encoded, validate=True)
            return cls({1: SecretKey(material)})
        except (binascii.Error, ValueError):
            raise KeyringError("PIIVAULT_LOCAL_KEK must be 32 bytes, base64-encoded") from None

    @classmethod
    def open_or_create(cls, path: Path) -> LocalKeyringProvider:
        if not path.exists():
            _write_keyring(path, {1: SecretKey.generate()}, exclusive=True)
        return cls(_read_keyring(path), path)

    def wrap(self, keys: Sequence[SecretKey]) -> list[WrappedKey]:
        version = self._current
        cipher = self._ciphers[version]
        return [
            WrappedKey(f"{_PREFIX}:v{version}:" + base64.b64encode(cipher.wrap(key, _WRAP_AAD)).decode(), version)
            for key in keys
        ]

    def unwrap(self, wrapped: Sequence[WrappedKey]) -> list[SecretKey]:
        return [self._unwrap_one(item) for item in wrapped]

    def _unwrap_one(self, item: WrappedKey) -> SecretKey:
        prefix, _, rest = item.blob.partition(":")
        version_text, _, payload = rest.partition(":")
        if prefix != _PREFIX or not version_text.startswith("v") or not version_text[1:].isdigit():
            raise CryptoError()
        cipher = self._ciphers.get(int(version_text[1:]))
        if cipher is None:
            raise CryptoError()
        try:
            raw = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise CryptoError() from None
        return cipher.unwrap(raw, _WRAP_AAD)

    def current_version(self) -> int:
        return self._current

    def versions(self) -> list[int]:
        return sorted(self._ciphers)

    def close(self) -> None:
        return None


def _read_keyring(path: Path) -> dict[int, SecretKey]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyringError(f"keyring file {path} must not be readable by group or others (chmod 600)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != _FORMAT:
            raise KeyringError(f"keyring file {path} has an unknown format")
        return {int(v): SecretKey(base64.b64decode(k, validate=True)) for v, k in document["versions"].items()}
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KeyringError(f"keyring file {path} is malformed") from None


def _write_keyring(path: Path, versions: dict[int, SecretKey], *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": _FORMAT,
        "versions": {str(v): base64.b64encode(k.reveal()).decode() for v, k in sorted(versions.items())},
    }
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return  # another process created it first; both then read the same file
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
