from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import pytest

from vault.crypto import CryptoError, SecretKey
from vault.keys.dek_cache import DekCache
from vault.keys.local import KeyringError, LocalKeyringProvider
from vault.keys.provider import WrappedKey


def test_keyring_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keyring.json"
    first = LocalKeyringProvider.open_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    dek = SecretKey.generate()
    wrapped = first.wrap([dek])[0]
    assert wrapped.blob.startswith("local:v1:") and wrapped.kek_version == 1
    assert LocalKeyringProvider.open_or_create(path).unwrap([wrapped]) == [dek]
    assert dek.reveal().hex() not in repr(wrapped) and wrapped.blob not in repr(wrapped)


def test_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyringProvider.open_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        LocalKeyringProvider.open_or_create(path)


def test_malformed_keyring_and_env_kek(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    with pytest.raises(KeyringError, match="unknown format"):
        LocalKeyringProvider.open_or_create(path)
    with pytest.raises(KeyringError, match="PIIVAULT_LOCAL_KEK"):
        LocalKeyringProvider.from_env_kek("too-short")
    provider = LocalKeyringProvider.from_env_kek(base64.b64encode(bytes(32)).decode())
    assert provider.status().latest_version == 1


def test_a_dek_wrapped_by_another_kek_does_not_unwrap() -> None:
    ours = LocalKeyringProvider({1: SecretKey.generate()})
    theirs = LocalKeyringProvider({1: SecretKey.generate()})
    wrapped = theirs.wrap([SecretKey.generate()])[0]
    with pytest.raises(CryptoError):
        ours.unwrap([wrapped])
    for forged in ("local:v9:AAAA", "vault:v1:AAAA", "local:vx:AAAA", "local:v1:not base64!"):
        with pytest.raises(CryptoError):
            ours.unwrap([WrappedKey(forged, 1)])


def test_dek_cache_bounds_expires_and_invalidates() -> None:
    now = [0.0]
    cache = DekCache(max_entries=2, ttl_seconds=10, clock=lambda: now[0])
    keys = [SecretKey.generate() for _ in range(3)]
    cache.put("a", "wa", keys[0])
    cache.put("b", "wb", keys[1])
    assert cache.get("a", "wa") == keys[0]
    cache.put("c", "wc", keys[2])  # evicts b, the least recently used
    assert cache.get("b", "wb") is None
    assert cache.get("a", "wa") == keys[0]
    assert cache.get("a", "rewrapped") is None  # keyed by the wrapped form too
    now[0] = 11
    assert cache.get("a", "wa") is None
    cache.put("c", "wc", keys[2])
    cache.invalidate("c")
    assert cache.get("c", "wc") is None
    assert cache.hits == 2 and cache.misses == 4


def test_local_rotation_is_seen_by_another_process_and_min_version_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    operator = LocalKeyringProvider.open_or_create(path)
    server = LocalKeyringProvider.open_or_create(path)  # another process with the same keyring file
    old = server.wrap([SecretKey.generate()])[0]
    assert operator.rotate() == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = server.wrap([SecretKey.generate()])[0]
    assert fresh.kek_version == 2  # the server reloaded the rotated keyring
    moved = server.rewrap([old])[0]
    assert moved.kek_version == 2
    assert server.unwrap([moved]) == server.unwrap([old])
    operator.set_min_decryption_version(2)
    with pytest.raises(CryptoError):
        server.unwrap([old])
    with pytest.raises(ValueError, match="minimum decryption version"):
        operator.set_min_decryption_version(3)
    with pytest.raises(KeyringError, match="cannot be rotated"):
        LocalKeyringProvider.from_env_kek(base64.b64encode(bytes(32)).decode()).rotate()


def test_two_rotations_from_stale_processes_never_lose_a_version(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first = LocalKeyringProvider.open_or_create(path)
    second = LocalKeyringProvider.open_or_create(path)  # its in-memory ring goes stale when `first` rotates
    assert first.rotate() == 2
    wrapped_under_2 = first.wrap([SecretKey.generate()])[0]
    assert second.rotate() == 3  # re-read under the lock: version 2 is kept, not overwritten
    reopened = LocalKeyringProvider.open_or_create(path)
    assert reopened.status().versions == (1, 2, 3)
    assert len(reopened.unwrap([wrapped_under_2])) == 1


def test_a_process_opening_the_keyring_after_a_rotation_knows_when_the_version_was_made(tmp_path: Path) -> None:
    """The settle period before retiring old versions counts from the latest version's creation time: a process that
    opens the keyring later (the operator's next command) must see that time, not 'unknown'."""
    path = tmp_path / "keyring.json"
    operator = LocalKeyringProvider.open_or_create(path)
    before = time.time()
    assert operator.rotate() == 2
    later = LocalKeyringProvider.open_or_create(path)
    status = later.status()
    assert status.latest_version == 2
    assert before - 1 <= status.latest_created <= time.time() + 1
