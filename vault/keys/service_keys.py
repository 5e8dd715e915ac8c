"""Service keys (blind-index key, request MAC key): generated once, stored wrapped by the KEK, unwrapped at start-up.

Several replicas may start at once against an empty database: each tries to insert, the primary key lets one win,
and the others read the winner's key.
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from vault.crypto import CryptoError, SecretKey
from vault.keys.provider import KeyProvider, ProviderConfigError, WrappedKey
from vault.storage.db import Database
from vault.storage.models import ServiceKeyRow

BLIND_INDEX_KEY = "blind-index/v1"
REQUEST_MAC_KEY = "request-mac/v1"
ERASURE_LEDGER_KEY = "erasure-ledger/v1"
AUDIT_MAC_KEY = "audit-mac/v1"
AUDIT_SIGNING_KEY = "audit-signing/v1"  # the 32-byte seed of the Ed25519 checkpoint key
DSAR_SIGNING_KEY = "dsar-signing/v1"  # the seed of the Ed25519 key that signs export manifests and erasure receipts
SERVICE_KEY_NAMES = (
    BLIND_INDEX_KEY,
    REQUEST_MAC_KEY,
    ERASURE_LEDGER_KEY,
    AUDIT_MAC_KEY,
    AUDIT_SIGNING_KEY,
    DSAR_SIGNING_KEY,
)


def load_service_keys(
    database: Database, provider: KeyProvider, names: tuple[str, ...] = SERVICE_KEY_NAMES
) -> dict[str, SecretKey]:
    stored = _read(database, names)
    missing = [name for name in names if name not in stored]
    if missing:
        fresh = [SecretKey.generate() for _ in missing]
        wrapped = provider.wrap(fresh)
        now = dt.datetime.now(dt.UTC)
        for name, item in zip(missing, wrapped, strict=True):
            # If another replica created the key first, ours is dropped and theirs is used.
            with suppress(IntegrityError), database.write() as connection:
                connection.execute(
                    insert(ServiceKeyRow).values(
                        name=name, wrapped_key=item.blob, kek_version=item.kek_version, create_time=now
                    )
                )
        stored = _read(database, names)
    try:
        unwrapped = provider.unwrap([stored[name] for name in names])
    except CryptoError:
        raise ProviderConfigError(
            "the service keys in the database do not unwrap with this KEK: wrong keyring, Vault key or provider"
        ) from None
    return dict(zip(names, unwrapped, strict=True))


def _read(database: Database, names: tuple[str, ...]) -> dict[str, WrappedKey]:
    with database.read() as connection:
        rows = connection.execute(
            select(ServiceKeyRow.name, ServiceKeyRow.wrapped_key, ServiceKeyRow.kek_version).where(
                ServiceKeyRow.name.in_(names)
            )
        ).all()
    return {row.name: WrappedKey(row.wrapped_key, row.kek_version) for row in rows}
