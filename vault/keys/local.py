"""The embedded default KEK home: a keyring file under the data directory, or a KEK given in the environment.

The file holds every KEK version (older versions stay so that DEKs wrapped under them can be unwrapped until they are
rewrapped) and the minimum version that may still be used to unwrap. It is created with mode 0600, and start-up
refuses a keyring that group or others can read, as ssh does with private keys: a readable keyring defeats the
encryption of every field. Rotation writes a new file atomically (write, fsync, rename); running servers notice the
change by its modification time and reload it, so all processes of one machine agree on the latest version.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vault.crypto import CryptoError, KeyWrapCipher, SecretKey
from vault.keys.provider import KekStatus, WrappedKey

_PREFIX = "local"
_WRAP_AAD = b"piivault/wrapped-key/v1"
_FORMAT = "piivault-keyring/1"


class KeyringError(Exception):
    """The keyring cannot be used (missing, malformed, or its permissions are too open)."""


@dataclass(frozen=True)
class _Ring:
    keys: dict[int, SecretKey]
    min_decryption_version: int
    created: dict[int, float] = field(default_factory=dict)  # Unix seconds, per version (absent in old keyrings)

    def __repr__(self) -> str:
        return f"_Ring(versions={sorted(self.keys)}, keys=[secure])"

    @property
    def latest(self) -> int:
        return max(self.keys)


class LocalKeyringProvider:
    """KEK versions held in memory, loaded from a 0600 file or from ``PIIVAULT_LOCAL_KEK``."""

    name = "local"

    def __init__(
        self,
        versions: dict[int, SecretKey],
        path: Path | None = None,
        min_decryption_version: int = 1,
        created: dict[int, float] | None = None,
    ) -> None:
        if not versions:
            raise KeyringError("keyring holds no key")
        self._path = path
        self._lock = threading.Lock()
        self._set_ring(_Ring(dict(versions), min_decryption_version, dict(created or {})))
        self._mtime = path.stat().st_mtime_ns if path is not None and path.exists() else 0
        self._calls = 0

    def __repr__(self) -> str:
        return f"LocalKeyringProvider(versions={sorted(self._ring.keys)}, keys=[secure])"

    @property
    def _ring(self) -> _Ring:
        return self._state[0]

    @property
    def _ciphers(self) -> dict[int, KeyWrapCipher]:
        return self._state[1]

    def _set_ring(self, ring: _Ring) -> None:
        # One assignment, so a concurrent wrap never sees a new ring with the old ciphers.
        self._state = (ring, {version: KeyWrapCipher(key) for version, key in ring.keys.items()})

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
            _write_keyring(path, _Ring({1: SecretKey.generate()}, 1), exclusive=True)
        ring = _read_keyring(path)
        # With the versions' creation times: the settle period before retiring a version counts from them.
        return cls(ring.keys, path, ring.min_decryption_version, ring.created)

    @property
    def calls(self) -> int:
        return self._calls

    def _refresh(self) -> None:
        """Reload the keyring if another process rotated it."""
        if self._path is None:
            return
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            with self._lock:
                self._set_ring(_read_keyring(self._path))
                self._mtime = mtime

    def wrap(self, keys: Sequence[SecretKey]) -> list[WrappedKey]:
        self._refresh()
        self._calls += 1
        ring, ciphers = self._state
        version = ring.latest
        cipher = ciphers[version]
        return [
            WrappedKey(f"{_PREFIX}:v{version}:" + base64.b64encode(cipher.wrap(key, _WRAP_AAD)).decode(), version)
            for key in keys
        ]

    def unwrap(self, wrapped: Sequence[WrappedKey]) -> list[SecretKey]:
        self._refresh()
        self._calls += 1
        return [self._unwrap_one(item) for item in wrapped]

    def rewrap(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        return self.wrap(self.unwrap(wrapped))

    def _unwrap_one(self, item: WrappedKey) -> SecretKey:
        prefix, _, rest = item.blob.partition(":")
        version_text, _, payload = rest.partition(":")
        if prefix != _PREFIX or not version_text.startswith("v") or not version_text[1:].isdigit():
            raise CryptoError()
        version = int(version_text[1:])
        cipher = self._ciphers.get(version)
        if cipher is None or version < self._ring.min_decryption_version:
            raise CryptoError()
        try:
            raw = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise CryptoError() from None
        return cipher.unwrap(raw, _WRAP_AAD)

    def status(self) -> KekStatus:
        self._refresh()
        ring = self._ring
        return KekStatus(
            self.name,
            str(self._path or "PIIVAULT_LOCAL_KEK"),
            ring.latest,
            ring.min_decryption_version,
            tuple(sorted(ring.keys)),
            ring.created.get(ring.latest, 0.0),
        )

    def rotate(self) -> int:
        with self._exclusive() as current:
            latest = current.latest + 1
            ring = _Ring(
                {**current.keys, latest: SecretKey.generate()},
                current.min_decryption_version,
                {**current.created, latest: time.time()},
            )
            self._persist(ring)
        return ring.latest

    def set_min_decryption_version(self, version: int) -> None:
        with self._exclusive() as current:
            if not current.min_decryption_version <= version <= current.latest:
                raise ValueError("minimum decryption version must lie between the current minimum and the latest")
            self._persist(_Ring(dict(current.keys), version, dict(current.created)))

    @contextmanager
    def _exclusive(self) -> Iterator[_Ring]:
        """The keyring as it is on disk now, under an exclusive lock on a lock file beside it.

        Every process that changes the keyring takes the lock and re-reads the file first, so two rotations (a CLI
        and a server's KeyService, or two server processes) can never both write "version N+1" and lose one key.
        """
        if self._path is None:
            raise KeyringError("a KEK given in PIIVAULT_LOCAL_KEK cannot be rotated; use a keyring file")
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                yield _read_keyring(self._path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _persist(self, ring: _Ring) -> None:
        assert self._path is not None
        _write_keyring(self._path, ring, exclusive=False)
        self._set_ring(ring)
        self._mtime = self._path.stat().st_mtime_ns

    def close(self) -> None:
        return None


def _read_keyring(path: Path) -> _Ring:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyringError(f"keyring file {path} must not be readable by group or others (chmod 600)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != _FORMAT:
            raise KeyringError(f"keyring file {path} has an unknown format")
        keys = {int(v): SecretKey(base64.b64decode(k, validate=True)) for v, k in document["versions"].items()}
        created = {int(v): float(t) for v, t in document.get("created", {}).items()}
        return _Ring(keys, int(document.get("min_decryption_version", 1)), created)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise KeyringError(f"keyring file {path} is malformed") from None


def _write_keyring(path: Path, ring: _Ring, *, exclusive: bool) -> None:
    """Write the keyring with mode 0600: directly when creating it, else via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": _FORMAT,
        "min_decryption_version": ring.min_decryption_version,
        "created": {str(v): t for v, t in sorted(ring.created.items())},
        "versions": {str(v): base64.b64encode(k.reveal()).decode() for v, k in sorted(ring.keys.items())},
    }
    target = path if exclusive else path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        return  # another process created it first; both then read the same file
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if not exclusive:
        os.replace(target, path)
