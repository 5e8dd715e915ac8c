"""Settings, read once from the environment at start-up and passed down (no module-level state)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A setting is missing or malformed. The message names the variable, never its value."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""
    listen: str = "127.0.0.1:50051"
    key_provider: str = "local"
    local_kek: str | None = field(default=None, repr=False)
    max_receive_bytes: int = 4 * 1024 * 1024
    workers: int = 4
    processes: int = 1
    dek_cache_size: int = 100_000
    dek_cache_ttl_seconds: float = 300.0
    token_cache_ttl_seconds: float = 5.0
    sqlite_synchronous: str = "NORMAL"
    db_pool_size: int = 20
    log_level: str = "info"
    reflection: bool = True
    shutdown_grace_seconds: float = 10.0
    erasure_ledger_path: Path | None = None
    vault_addr: str = ""
    vault_token: str | None = field(default=None, repr=False)
    vault_role_id: str | None = field(default=None, repr=False)
    vault_secret_id: str | None = field(default=None, repr=False)
    vault_ca_cert: str | None = None
    transit_mount: str = "transit"
    transit_key: str = "piivault-kek"
    transit_create_key: bool = True
    vault_timeout_seconds: float = 1.0
    key_settle_seconds: float = 60.0
    purposes_file: Path | None = None
    lookups_per_minute: int = 1_200
    lookups_per_day: int = 100_000
    find_floor_ms: float = 4.0
    dsar_due_days: int = 30
    erasure_purchases: str = "delete"
    analytics_settle_seconds: float = 2.0
    retention_inactive_days: int = 1095
    retention_interval_hours: float = 0.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tls_require_client_cert: bool = False
    metrics_listen: str = ""  # host:port of the Prometheus endpoint; empty: no endpoint and no RPC metrics
    otel_exporter: str = "none"  # OpenTelemetry span exporter: none, console or otlp

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'piivault.db'}"

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keyring.json"

    @property
    def effective_erasure_ledger_path(self) -> Path:
        return self.erasure_ledger_path or self.data_dir / "erasure-ledger.jsonl"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        defaults = cls()
        provider = source.get("PIIVAULT_KEY_PROVIDER", defaults.key_provider)
        if provider not in ("local", "vault-transit"):
            raise ConfigError("PIIVAULT_KEY_PROVIDER must be 'local' or 'vault-transit'")
        synchronous = source.get("PIIVAULT_SQLITE_SYNCHRONOUS", defaults.sqlite_synchronous).upper()
        if synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError("PIIVAULT_SQLITE_SYNCHRONOUS must be NORMAL, FULL or EXTRA")
        return cls(
            data_dir=Path(source.get("PIIVAULT_DATA_DIR", str(defaults.data_dir))),
            database_url=source.get("PIIVAULT_DATABASE_URL", ""),
            listen=source.get("PIIVAULT_LISTEN", defaults.listen),
            key_provider=provider,
            local_kek=source.get("PIIVAULT_LOCAL_KEK") or None,
            max_receive_bytes=_int(source, "PIIVAULT_MAX_RECEIVE_BYTES", defaults.max_receive_bytes, 1024),
            workers=_int(source, "PIIVAULT_WORKERS", defaults.workers, 1),
            processes=_int(source, "PIIVAULT_PROCESSES", defaults.processes, 1),
            dek_cache_size=_int(source, "PIIVAULT_DEK_CACHE_SIZE", defaults.dek_cache_size, 0),
            dek_cache_ttl_seconds=_float(source, "PIIVAULT_DEK_CACHE_TTL_SECONDS", defaults.dek_cache_ttl_seconds),
            token_cache_ttl_seconds=_float(
                source, "PIIVAULT_TOKEN_CACHE_TTL_SECONDS", defaults.token_cache_ttl_seconds
            ),
            sqlite_synchronous=synchronous,
            db_pool_size=_int(source, "PIIVAULT_DB_POOL_SIZE", defaults.db_pool_size, 1),
            log_level=source.get("PIIVAULT_LOG_LEVEL", defaults.log_level).lower(),
            reflection=_bool(source, "PIIVAULT_REFLECTION", defaults.reflection),
            shutdown_grace_seconds=_float(source, "PIIVAULT_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace_seconds),
            erasure_ledger_path=Path(source["PIIVAULT_ERASURE_LEDGER"])
            if source.get("PIIVAULT_ERASURE_LEDGER")
            else None,
            vault_addr=source.get("VAULT_ADDR", ""),
            vault_token=source.get("VAULT_TOKEN") or None,
            vault_role_id=source.get("VAULT_ROLE_ID") or None,
            vault_secret_id=source.get("VAULT_SECRET_ID") or None,
            vault_ca_cert=source.get("VAULT_CACERT") or None,
            transit_mount=source.get("PIIVAULT_TRANSIT_MOUNT", defaults.transit_mount),
            transit_key=source.get("PIIVAULT_TRANSIT_KEY", defaults.transit_key),
            transit_create_key=_bool(source, "PIIVAULT_TRANSIT_CREATE_KEY", defaults.transit_create_key),
            vault_timeout_seconds=_float(source, "PIIVAULT_VAULT_TIMEOUT_SECONDS", defaults.vault_timeout_seconds),
            key_settle_seconds=_float(source, "PIIVAULT_KEY_SETTLE_SECONDS", defaults.key_settle_seconds),
            purposes_file=Path(source["PIIVAULT_PURPOSES_FILE"]) if source.get("PIIVAULT_PURPOSES_FILE") else None,
            lookups_per_minute=_int(source, "PIIVAULT_LOOKUPS_PER_MINUTE", defaults.lookups_per_minute, 0),
            lookups_per_day=_int(source, "PIIVAULT_LOOKUPS_PER_DAY", defaults.lookups_per_day, 0),
            find_floor_ms=_float(source, "PIIVAULT_FIND_FLOOR_MS", defaults.find_floor_ms),
            dsar_due_days=_int(source, "PIIVAULT_DSAR_DUE_DAYS", defaults.dsar_due_days, 1),
            analytics_settle_seconds=_float(
                source, "PIIVAULT_ANALYTICS_SETTLE_SECONDS", defaults.analytics_settle_seconds
            ),
            erasure_purchases=_choice(
                source, "PIIVAULT_ERASURE_PURCHASES", defaults.erasure_purchases, ("delete", "anonymise")
            ),
            retention_inactive_days=_int(
                source, "PIIVAULT_RETENTION_INACTIVE_DAYS", defaults.retention_inactive_days, 1
            ),
            retention_interval_hours=_float(
                source, "PIIVAULT_RETENTION_INTERVAL_HOURS", defaults.retention_interval_hours
            ),
            tls_cert=_path(source, "PIIVAULT_TLS_CERT"),
            tls_key=_path(source, "PIIVAULT_TLS_KEY"),
            tls_client_ca=_path(source, "PIIVAULT_TLS_CLIENT_CA"),
            tls_require_client_cert=_bool(source, "PIIVAULT_TLS_REQUIRE_CLIENT_CERT", defaults.tls_require_client_cert),
            metrics_listen=_listen(source, "PIIVAULT_METRICS_LISTEN"),
            otel_exporter=_choice(
                source, "PIIVAULT_OTEL_EXPORTER", defaults.otel_exporter, ("none", "console", "otlp")
            ),
        )._checked()

    def _checked(self) -> Settings:
        if self.key_provider == "vault-transit":
            if not self.vault_addr:
                raise ConfigError("VAULT_ADDR is required with PIIVAULT_KEY_PROVIDER=vault-transit")
            if self.vault_token and self.vault_role_id:
                raise ConfigError("set either VAULT_TOKEN or VAULT_ROLE_ID and VAULT_SECRET_ID, not both")
            if not self.vault_token and not (self.vault_role_id and self.vault_secret_id):
                raise ConfigError(
                    "set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID, for the Vault Transit provider"
                )
        check_tls(self)
        return self


def check_tls(settings: Settings) -> None:
    """The TLS settings go together; ``start_server`` checks them again, for settings not read by ``from_env``.

    A client CA needs PIIVAULT_TLS_REQUIRE_CLIENT_CERT=true because grpcio's Python server can either not ask for a
    client certificate at all or require a verified one; it has no "ask, verify if given" mode. With a client CA every
    client therefore presents a certificate signed by it, and may still authenticate with a bearer token.
    """
    if (settings.tls_cert is None) != (settings.tls_key is None):
        missing = "PIIVAULT_TLS_KEY" if settings.tls_key is None else "PIIVAULT_TLS_CERT"
        raise ConfigError(f"{missing} is required: set both PIIVAULT_TLS_CERT and PIIVAULT_TLS_KEY, or neither")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError("PIIVAULT_TLS_CLIENT_CA needs TLS: set PIIVAULT_TLS_CERT and PIIVAULT_TLS_KEY too")
    if settings.tls_require_client_cert and settings.tls_client_ca is None:
        raise ConfigError("PIIVAULT_TLS_REQUIRE_CLIENT_CERT needs PIIVAULT_TLS_CLIENT_CA")
    if settings.tls_client_ca is not None and not settings.tls_require_client_cert:
        raise ConfigError(
            "PIIVAULT_TLS_CLIENT_CA needs PIIVAULT_TLS_REQUIRE_CLIENT_CERT=true: the gRPC server cannot ask for an "
            "optional client certificate, only require one"
        )


def _choice(source: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = source.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of: {', '.join(allowed)}")
    return value


def _int(source: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _float(source: Mapping[str, str], name: str, default: float) -> float:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number")
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def host_and_port(value: str, name: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) split and checked; the host must be given, so that listening on every
    interface is a visible choice (``0.0.0.0``), never the result of a forgotten host."""
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isascii() or not port.isdigit():
        raise ConfigError(f"{name} must be host:port, such as 127.0.0.1:9464")
    if int(port) > 65535:
        raise ConfigError(f"{name} must name a port from 0 to 65535")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(f"{name} must put an IPv6 address in brackets, such as [::1]:9464")
    return host, int(port)


def _listen(source: Mapping[str, str], name: str) -> str:
    raw = source.get(name, "").strip()
    if raw:
        host_and_port(raw, name)
    return raw


def _path(source: Mapping[str, str], name: str) -> Path | None:
    raw = source.get(name)
    return Path(raw) if raw else None


def _bool(source: Mapping[str, str], name: str, default: bool) -> bool:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")
