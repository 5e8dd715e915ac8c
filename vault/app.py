"""Wiring: build every collaborator once from ``Settings`` and hand them to the services that need them."""

from __future__ import annotations

from dataclasses import dataclass

from vault.auth.tokens import TokenService
from vault.config import ConfigError, Settings
from vault.crypto import Mac
from vault.customers.service import CustomerService
from vault.keys.data_keys import DataKeys
from vault.keys.dek_cache import DekCache
from vault.keys.local import LocalKeyringProvider
from vault.keys.provider import KeyProvider
from vault.keys.service_keys import BLIND_INDEX_KEY, REQUEST_MAC_KEY, load_service_keys
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter
from vault.storage.migrate import require_current_schema


def open_key_provider(settings: Settings) -> KeyProvider:
    if settings.key_provider == "local":
        if settings.local_kek:
            return LocalKeyringProvider.from_env_kek(settings.local_kek)
        return LocalKeyringProvider.open_or_create(settings.keyring_path)
    raise ConfigError(f"PIIVAULT_KEY_PROVIDER={settings.key_provider} is not supported")


@dataclass
class Vault:
    settings: Settings
    database: Database
    provider: KeyProvider
    data_keys: DataKeys
    tokens: TokenService
    customers: CustomerService
    writer: GroupCommitter

    @classmethod
    def open(
        cls, settings: Settings, *, database: Database | None = None, provider: KeyProvider | None = None
    ) -> Vault:
        database = database or Database.from_url(
            settings.effective_database_url,
            pool_size=settings.db_pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        require_current_schema(database.engine)
        provider = provider or open_key_provider(settings)
        service_keys = load_service_keys(database, provider)
        writer = GroupCommitter(database)
        data_keys = DataKeys(provider, DekCache(settings.dek_cache_size, settings.dek_cache_ttl_seconds))
        customers = CustomerService(
            database, writer, data_keys, Mac(service_keys[BLIND_INDEX_KEY]), Mac(service_keys[REQUEST_MAC_KEY])
        )
        return cls(
            settings,
            database,
            provider,
            data_keys,
            TokenService(database, settings.token_cache_ttl_seconds),
            customers,
            writer,
        )

    def close(self) -> None:
        self.writer.close()
        self.provider.close()
        self.database.dispose()
