"""Wiring: build every collaborator once from ``Settings`` and hand them to the services that need them."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from audit.log import AuditLog
from audit.verify import ChainVerifier
from consent.decisions import AccessPolicy
from consent.purposes import PurposeRegistry, RegistryError
from consent.service import ConsentService
from vault.auth.certificates import ClientCertificates
from vault.auth.ratelimit import LookupLimiter
from vault.auth.roles import ROLE_FIELDS
from vault.auth.tokens import TokenService
from vault.config import ConfigError, Settings
from vault.crypto import ChainMac, Mac, Signer
from vault.customers.erasure import CryptoShredder, ErasureLedgerFile
from vault.customers.identity import IdentityService
from vault.customers.service import CustomerService
from vault.customers.timing import LatencyFloor
from vault.dsar.retention import RetentionJob
from vault.dsar.service import DsarService
from vault.imports.service import ImportService
from vault.keys.data_keys import DataKeys
from vault.keys.dek_cache import DekCache
from vault.keys.local import LocalKeyringProvider
from vault.keys.provider import KeyProvider
from vault.keys.rotation import KeyRotation
from vault.keys.service_keys import (
    AUDIT_MAC_KEY,
    AUDIT_SIGNING_KEY,
    BLIND_INDEX_KEY,
    DSAR_SIGNING_KEY,
    ERASURE_LEDGER_KEY,
    REQUEST_MAC_KEY,
    load_service_keys,
)
from vault.purchases.analytics import AnalyticsFeed
from vault.purchases.service import PurchaseService
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter
from vault.storage.migrate import require_current_schema

_log = structlog.get_logger("piivault.app")


def open_key_provider(settings: Settings) -> KeyProvider:
    if settings.key_provider == "vault-transit":
        from vault.keys.vault_transit import VaultTransitKeyProvider  # hvac is only imported when configured

        return VaultTransitKeyProvider.connect(
            url=settings.vault_addr,
            mount=settings.transit_mount,
            key_name=settings.transit_key,
            token=settings.vault_token,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id,
            create_key=settings.transit_create_key,
            timeout_seconds=settings.vault_timeout_seconds,
            verify=settings.vault_ca_cert or True,
        )
    if settings.local_kek:
        return LocalKeyringProvider.from_env_kek(settings.local_kek)
    return LocalKeyringProvider.open_or_create(settings.keyring_path)


@dataclass
class Vault:
    settings: Settings
    database: Database
    provider: KeyProvider
    data_keys: DataKeys
    tokens: TokenService
    certificates: ClientCertificates
    customers: CustomerService
    consents: ConsentService
    writer: GroupCommitter
    keys: KeyRotation
    shredder: CryptoShredder
    dsar: DsarService
    retention: RetentionJob
    purchases: PurchaseService
    analytics: AnalyticsFeed
    imports: ImportService
    identity: IdentityService
    audit: AuditLog
    audit_verifier: ChainVerifier
    owned: tuple[object, ...] = ()  # what open() created and close() must release; injected parts stay the caller's
    replayed_erasures: int = 0  # customers the erasure-ledger replay at open() shredded again (after a restore)

    @classmethod
    def open(
        cls, settings: Settings, *, database: Database | None = None, provider: KeyProvider | None = None
    ) -> Vault:
        """Connect everything, then replay the erasure ledger — all before any port is opened."""
        try:  # first: a registry the vault cannot enforce stops it before anything is opened
            registry = PurposeRegistry.load(settings.purposes_file)
        except RegistryError as error:
            raise ConfigError(f"PIIVAULT_PURPOSES_FILE: {error}") from None
        owned: list[object] = []
        if database is None:
            database = Database.from_url(
                settings.effective_database_url,
                pool_size=settings.db_pool_size,
                sqlite_synchronous=settings.sqlite_synchronous,
            )
            owned.append(database)
        require_current_schema(database.engine)
        if provider is None:
            provider = open_key_provider(settings)
            owned.append(provider)
        service_keys = load_service_keys(database, provider)
        chain = ChainMac(service_keys[AUDIT_MAC_KEY])
        signer = Signer(service_keys[AUDIT_SIGNING_KEY])
        audit = AuditLog(chain, signer)
        writer = GroupCommitter(database, before_commit=audit.append)
        audit.attach(writer)
        data_keys = DataKeys(provider, DekCache(settings.dek_cache_size, settings.dek_cache_ttl_seconds))
        request_mac = Mac(service_keys[REQUEST_MAC_KEY])
        customers = CustomerService(
            database,
            writer,
            audit,
            data_keys,
            Mac(service_keys[BLIND_INDEX_KEY]),
            request_mac,
            AccessPolicy(registry, ROLE_FIELDS),
            LookupLimiter(settings.lookups_per_minute, settings.lookups_per_day),
            find_floor=LatencyFloor(settings.find_floor_ms / 1000),
        )
        consents = ConsentService(database, writer, audit, customers, registry, request_mac)
        shredder = CryptoShredder(
            database,
            writer,
            data_keys,
            Mac(service_keys[ERASURE_LEDGER_KEY]),
            ErasureLedgerFile(settings.effective_erasure_ledger_path),
            delete_purchases=settings.erasure_purchases == "delete",
        )
        purchases = PurchaseService(database, writer, request_mac)
        dsar = DsarService(
            database,
            writer,
            audit,
            customers,
            consents,
            shredder,
            purchases,
            Signer(service_keys[DSAR_SIGNING_KEY]),
            settings.dsar_due_days,
        )
        retention = RetentionJob(database, shredder, consents, registry, settings.retention_inactive_days)
        replayed = shredder.replay()
        if replayed:
            _log.warning("erasure.ledger_reapplied", count=replayed)
        return cls(
            settings,
            database,
            provider,
            data_keys,
            TokenService(database, settings.token_cache_ttl_seconds),
            ClientCertificates(database, request_mac, settings.token_cache_ttl_seconds),
            customers,
            consents,
            writer,
            KeyRotation(database, provider, data_keys, settings.key_settle_seconds),
            shredder,
            dsar,
            retention,
            purchases,
            AnalyticsFeed(database, audit, request_mac, settings.analytics_settle_seconds),
            ImportService(customers, purchases),
            IdentityService(customers, writer, shredder),
            audit,
            ChainVerifier(database, chain, signer.public_key, service_keys[AUDIT_MAC_KEY].reveal()),
            tuple(owned),
            replayed,
        )

    def close(self) -> None:
        self.writer.close()
        if self.provider in self.owned:
            self.provider.close()
        if self.database in self.owned:
            self.database.dispose()
