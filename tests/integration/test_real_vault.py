"""VaultTransitKeyProvider against a real Vault (or OpenBao), when one is configured.

Runs only with VAULT_ADDR and VAULT_TOKEN set; PIIVAULT_TRANSIT_MOUNT (default ``transit``) names the mount and
VAULT_CACERT a CA bundle. Every run uses its own key, ``piivault-test-<random>``, and deletes it afterwards when the
token is allowed to (deletion needs ``update`` on the key's config and ``delete`` on the key).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import hvac
import pytest
from hvac import exceptions as hvac_errors

from vault.crypto import CryptoError, SecretKey
from vault.keys.provider import WrappedKey
from vault.keys.vault_transit import VaultTransitKeyProvider

pytestmark = pytest.mark.skipif(
    not (os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN")),
    reason="VAULT_ADDR and VAULT_TOKEN are not set: no real Vault to test against",
)

MOUNT = os.environ.get("PIIVAULT_TRANSIT_MOUNT", "transit")


def _verify() -> bool | str:
    return os.environ.get("VAULT_CACERT") or True


@pytest.fixture
def key_name() -> Iterator[str]:
    name = f"piivault-test-{secrets.token_hex(6)}"
    yield name
    # url, token and verify explicit, as in the provider: nothing is picked up from ~/.vault-token.
    client: Any = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], verify=_verify())
    transit = client.secrets.transit
    try:
        # The token may not delete keys; then the key stays, named so that it is easy to find and remove.
        with suppress(hvac_errors.Forbidden, hvac_errors.InvalidRequest, hvac_errors.InvalidPath):
            transit.update_key_configuration(name, deletion_allowed=True, mount_point=MOUNT)
            transit.delete_key(name, mount_point=MOUNT)
    finally:
        client.adapter.close()


@pytest.fixture
def provider(key_name: str) -> Iterator[VaultTransitKeyProvider]:
    opened = VaultTransitKeyProvider.connect(
        os.environ["VAULT_ADDR"],
        mount=MOUNT,
        key_name=key_name,
        token=os.environ["VAULT_TOKEN"],
        create_key=True,
        verify=_verify(),
    )
    yield opened
    opened.close()


def _tampered(item: WrappedKey) -> WrappedKey:
    prefix, payload = item.blob.rsplit(":", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 0x01
    return WrappedKey(f"{prefix}:{base64.b64encode(bytes(raw)).decode()}", item.kek_version)


def test_round_trip_in_one_call_each(provider: VaultTransitKeyProvider, key_name: str) -> None:
    status = provider.status()
    assert (status.provider, status.key_name, status.latest_version, status.versions) == (
        "vault-transit",
        key_name,
        1,
        (1,),
    )
    deks = [SecretKey.generate() for _ in range(50)]
    before = provider.calls
    wrapped = provider.wrap(deks)
    assert all(item.blob.startswith("vault:v1:") and item.kek_version == 1 for item in wrapped)
    assert provider.unwrap(wrapped) == deks
    assert provider.calls - before == 2
    with pytest.raises(CryptoError):
        provider.unwrap([wrapped[0], _tampered(wrapped[1])])


def test_rotate_rewrap_and_minimum_decryption_version(provider: VaultTransitKeyProvider) -> None:
    deks = [SecretKey.generate() for _ in range(10)]
    old = provider.wrap(deks)
    assert provider.rotate() == 2
    assert provider.wrap([SecretKey.generate()])[0].kek_version == 2

    fresh = provider.rewrap(old)
    assert all(item.kek_version == 2 and item.blob.startswith("vault:v2:") for item in fresh)
    assert provider.unwrap(fresh) == deks
    assert provider.unwrap(old) == deks  # still allowed until the minimum is raised

    provider.set_min_decryption_version(2)
    status = provider.status()
    assert (status.latest_version, status.min_decryption_version, status.versions) == (2, 2, (2,))
    with pytest.raises(CryptoError):
        provider.unwrap(old[:1])
    with pytest.raises(CryptoError):
        provider.rewrap(old[:1])
    assert provider.unwrap(fresh) == deks
