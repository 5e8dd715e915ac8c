"""``piivault doctor``: check that a deployment can serve, one verdict per check, without changing anything.

Checks: configuration, purpose registry, TLS files, database reachability and migration level, key provider
(reachable, a wrap/unwrap round trip, versions; for Vault Transit, the token's capabilities), file permissions of
the local keyring, the audit chain, and clock skew against the database. Messages name what is wrong, never a secret
or a value.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

OK, WARN, FAIL = "ok", "warn", "fail"
SKEW_LIMIT_SECONDS = 2.0  # the analytics export's settle window assumes clocks within this


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    result: str
    detail: str


def diagnose(environ: dict[str, str] | None = None) -> list[Verdict]:
    from consent.purposes import PurposeRegistry, RegistryError
    from vault.config import ConfigError, Settings

    verdicts: list[Verdict] = []
    try:
        settings = Settings.from_env(environ)
    except ConfigError as error:
        return [Verdict("configuration", FAIL, str(error))]
    verdicts.append(Verdict("configuration", OK, f"key provider {settings.key_provider}, listen {settings.listen}"))
    try:
        registry = PurposeRegistry.load(settings.purposes_file)
        verdicts.append(Verdict("purposes", OK, f"{sum(1 for _ in registry)} purposes"))
    except RegistryError as error:
        verdicts.append(Verdict("purposes", FAIL, str(error)))
    verdicts.append(_check("tls", lambda: _tls(settings)))
    database_ok = _database(settings, verdicts)
    provider_ok = _provider(settings, verdicts)
    if database_ok and provider_ok:
        verdicts.append(_check("audit chain", lambda: _audit(settings)))
    return verdicts


def _check(name: str, probe: Callable[[], Verdict]) -> Verdict:
    try:
        return probe()
    except Exception as error:  # noqa: BLE001 - a doctor reports every failure as a verdict, by type only
        return Verdict(name, FAIL, f"{type(error).__name__}")


def _tls(settings: object) -> Verdict:
    from vault.api.server import server_credentials
    from vault.config import ConfigError, Settings

    assert isinstance(settings, Settings)
    if settings.tls_cert is None:
        return Verdict("tls", WARN, "plaintext: set PIIVAULT_TLS_CERT and PIIVAULT_TLS_KEY outside a trusted network")
    try:
        server_credentials(settings)
    except ConfigError as error:
        return Verdict("tls", FAIL, str(error))
    mtls = "mutual TLS required" if settings.tls_require_client_cert else "server TLS"
    return Verdict("tls", OK, mtls)


def _database(settings: object, verdicts: list[Verdict]) -> bool:
    from vault.config import Settings
    from vault.storage.db import make_engine
    from vault.storage.migrate import current_revision, head_revision

    assert isinstance(settings, Settings)
    try:
        engine = make_engine(settings.effective_database_url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            server_now = connection.execute(text("SELECT CURRENT_TIMESTAMP")).scalar()
    except Exception as error:  # noqa: BLE001 - unreachable, wrong credentials, missing file: all a FAIL
        verdicts.append(Verdict("database", FAIL, f"cannot connect ({type(error).__name__})"))
        return False
    try:
        current, head = current_revision(engine), head_revision(engine)
    finally:
        engine.dispose()
    dialect = engine.dialect.name
    if current != head:
        verdicts.append(
            Verdict(
                "database", FAIL, f"{dialect} at schema {current or 'none'}, code needs {head}: run `piivault migrate`"
            )
        )
        return False
    verdicts.append(Verdict("database", OK, f"{dialect}, schema {current}"))
    verdicts.append(_skew(dialect, server_now))
    return True


def _skew(dialect: str, server_now: object) -> Verdict:
    if dialect == "sqlite" or not isinstance(server_now, dt.datetime):
        return Verdict("clock skew", OK, "same machine (SQLite)")
    now = dt.datetime.now(dt.UTC)
    theirs = server_now if server_now.tzinfo else server_now.replace(tzinfo=dt.UTC)
    skew = abs((now - theirs).total_seconds())
    verdict = OK if skew <= SKEW_LIMIT_SECONDS else WARN
    return Verdict("clock skew", verdict, f"{skew:.2f} s against the database (limit {SKEW_LIMIT_SECONDS:.0f} s)")


def _provider(settings: object, verdicts: list[Verdict]) -> bool:
    from vault.app import open_key_provider
    from vault.config import Settings
    from vault.crypto import SecretKey
    from vault.keys.vault_transit import VaultTransitKeyProvider

    assert isinstance(settings, Settings)
    if settings.key_provider == "local" and not settings.local_kek:
        path = settings.keyring_path
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                verdicts.append(Verdict("keyring permissions", FAIL, f"{path} is mode {mode:o}; chmod 600 it"))
                return False
            verdicts.append(Verdict("keyring permissions", OK, f"{path} is mode {mode:o}"))
        else:
            verdicts.append(Verdict("keyring permissions", WARN, "no keyring yet; `piivault serve` creates one"))
            return False
    try:
        provider = open_key_provider(settings)
    except Exception as error:  # noqa: BLE001 - every provider error is a verdict
        verdicts.append(Verdict("key provider", FAIL, f"{settings.key_provider}: {type(error).__name__}: {error}"))
        return False
    try:
        key = SecretKey.generate()
        round_trip = provider.unwrap(provider.wrap([key]))[0] == key
        status = provider.status()
        if isinstance(provider, VaultTransitKeyProvider):
            verdicts.append(_check("vault token policy", lambda: _token_policy(provider)))
    except Exception as error:  # noqa: BLE001
        verdicts.append(Verdict("key provider", FAIL, f"{settings.key_provider}: {type(error).__name__}"))
        return False
    finally:
        provider.close()
    if not round_trip:
        verdicts.append(Verdict("key provider", FAIL, "a wrapped key did not unwrap to itself"))
        return False
    detail = f"{provider.name}: KEK v{status.latest_version}, min decryption v{status.min_decryption_version}"
    verdicts.append(Verdict("key provider", OK, detail))
    return True


def _token_policy(provider: object) -> Verdict:
    """The Vault token may wrap and unwrap (else FAIL), rotate (else WARN), and holds no more than it should."""
    from vault.keys.vault_transit import VaultTransitKeyProvider

    assert isinstance(provider, VaultTransitKeyProvider)
    policy = provider.token_policy()
    if policy.missing:
        return Verdict("vault token policy", FAIL, "the token lacks " + ", ".join(policy.missing))
    notes = []
    if policy.missing_for_rotation:
        notes.append("KEK rotation will be refused: the token lacks " + ", ".join(policy.missing_for_rotation))
    if policy.excess:
        notes.append("the token holds more than piivault needs: " + ", ".join(policy.excess))
    if notes:
        return Verdict("vault token policy", WARN, "; ".join(notes))
    return Verdict("vault token policy", OK, "wrap, unwrap, rewrap and rotate allowed; no delete or export")


def _audit(settings: object) -> Verdict:
    """Verify the chain with the stored (wrapped) audit keys; reads only — nothing is created or replayed."""
    from sqlalchemy import select

    from audit.verify import ChainVerifier
    from vault.app import open_key_provider
    from vault.config import Settings
    from vault.crypto import ChainMac, Signer
    from vault.keys.provider import WrappedKey
    from vault.keys.service_keys import AUDIT_MAC_KEY, AUDIT_SIGNING_KEY
    from vault.storage.db import Database
    from vault.storage.models import ServiceKeyRow

    assert isinstance(settings, Settings)
    database = Database.from_url(settings.effective_database_url)
    provider = open_key_provider(settings)
    try:
        with database.read() as connection:
            rows = {
                row.name: WrappedKey(row.wrapped_key, row.kek_version)
                for row in connection.execute(
                    select(ServiceKeyRow.name, ServiceKeyRow.wrapped_key, ServiceKeyRow.kek_version).where(
                        ServiceKeyRow.name.in_([AUDIT_MAC_KEY, AUDIT_SIGNING_KEY])
                    )
                )
            }
        if len(rows) < 2:
            return Verdict("audit chain", WARN, "no audit keys yet: the vault has not served")
        mac_key, signing_seed = provider.unwrap([rows[AUDIT_MAC_KEY], rows[AUDIT_SIGNING_KEY]])
        verifier = ChainVerifier(database, ChainMac(mac_key), Signer(signing_seed).public_key, mac_key.reveal())
        report = verifier.verify()
    finally:
        provider.close()
        database.dispose()
    if not report.intact:
        return Verdict("audit chain", FAIL, f"broken at sequence {report.first_bad_seq}: {report.problem}")
    return Verdict(
        "audit chain", OK, f"{report.events_checked:,} events, {report.checkpoints_checked} checkpoints verify"
    )
