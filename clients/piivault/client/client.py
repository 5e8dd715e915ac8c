"""``PiiVault``: the one object an integrating system holds — a channel, a token, and one attribute per service."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from piivault.client._calls import CallSettings
from piivault.client.analytics import Analytics
from piivault.client.audit import Audit
from piivault.client.consent import Consent
from piivault.client.customers import Customers
from piivault.client.dsar import Dsar
from piivault.client.imports import Imports
from piivault.client.keys import Keys
from piivault.client.purchases import Purchases
from piivault.client.retry import RetryPolicy

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not subscriptable
    Interceptor = (
        grpc.UnaryUnaryClientInterceptor[Any, Any]
        | grpc.UnaryStreamClientInterceptor[Any, Any]
        | grpc.StreamUnaryClientInterceptor[Any, Any]
    )
DEFAULT_TIMEOUT = 30.0
STREAM_TIMEOUT = 600.0
# Environment variables read by ``PiiVault.from_env`` (the server's own TLS settings are PIIVAULT_TLS_*).
ADDRESS_ENV = "PIIVAULT_ADDRESS"
TOKEN_ENV = "PIIVAULT_TOKEN"  # noqa: S105 - the name of a variable, not a token
CA_FILE_ENV = "PIIVAULT_CA_FILE"
CLIENT_CERT_ENV = "PIIVAULT_CLIENT_CERT_FILE"
CLIENT_KEY_ENV = "PIIVAULT_CLIENT_KEY_FILE"


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the vault. ``root_certificates``: PEM of the CA that signed the server's certificate (``None``: the
    system's roots). For mTLS add the client's ``certificate_chain`` and ``private_key`` (PEM), registered with
    ``piivault cert add``; the certificate then authenticates calls made without a token."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("mTLS needs both the client certificate chain and its private key")

    @classmethod
    def from_files(
        cls, ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
    ) -> TlsConfig:
        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return cls(root_certificates=read(ca), certificate_chain=read(cert), private_key=read(key))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


class PiiVault:
    """A client of the piivault gRPC API.

    >>> with PiiVault("127.0.0.1:50051", token) as vault:
    ...     created = vault.customers.create(customers_pb2.Customer(name="李娜", mobile="13900000042"))
    ...     found = vault.customers.find(mobile="+86 139 0000 0042", purpose="customer_service")

    ``token`` is sent as ``authorization: Bearer …`` on every call (``None``: no token, for mTLS with a registered
    client certificate). Without ``tls`` the channel is plaintext, which is refused for anything but a loopback
    address unless ``allow_insecure=True`` (a token sent in clear is a stolen token). Every call has a deadline:
    ``default_timeout`` seconds, or ``stream_timeout`` for the long ones (streams, imports, chain verification);
    each method also takes ``timeout=``. Calls that are safe to repeat are retried on UNAVAILABLE per ``retry``
    (each service's docstring says which). ``interceptors`` are gRPC client interceptors put on the channel.
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        tls: TlsConfig | None = None,
        allow_insecure: bool = False,
        default_timeout: float = DEFAULT_TIMEOUT,
        stream_timeout: float = STREAM_TIMEOUT,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        _check_token(token)
        if tls is None and not allow_insecure and not is_loopback(address):
            raise ValueError(
                "refusing a plaintext channel to a non-loopback address: pass tls=TlsConfig(...) "
                "(or allow_insecure=True behind a TLS-terminating mesh)"
            )
        options = list(channel_options)
        if tls is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            channel = grpc.secure_channel(address, tls.credentials(), options=options)
        self._raw_channel = channel
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        settings = CallSettings(
            token=token,
            default_timeout=default_timeout,
            stream_timeout=stream_timeout,
            retry=retry or RetryPolicy(),
        )
        self._init(address, channel, settings, owns_channel=True)

    def _init(self, address: str, channel: grpc.Channel, settings: CallSettings, *, owns_channel: bool) -> None:
        self.address = address
        self._channel = channel
        self._settings = settings
        self._owns_channel = owns_channel
        self.customers = Customers(settings, channel)
        self.consent = Consent(settings, channel)
        self.purchases = Purchases(settings, channel)
        self.imports = Imports(settings, channel)
        self.dsar = Dsar(settings, channel)
        self.audit = Audit(settings, channel)
        self.analytics = Analytics(settings, channel)
        self.keys = Keys(settings, channel)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> PiiVault:
        """A client from PIIVAULT_ADDRESS, PIIVAULT_TOKEN and, for TLS, PIIVAULT_CA_FILE (plus, for mTLS,
        PIIVAULT_CLIENT_CERT_FILE and PIIVAULT_CLIENT_KEY_FILE); ``options`` are passed to the constructor."""
        env = os.environ if env is None else env
        address = env.get(ADDRESS_ENV)
        if not address:
            raise ValueError(f"{ADDRESS_ENV} is not set (the vault's host:port, e.g. 127.0.0.1:50051)")
        tls = options.pop("tls", None)
        if tls is None and (env.get(CA_FILE_ENV) or env.get(CLIENT_CERT_ENV)):
            tls = TlsConfig.from_files(env.get(CA_FILE_ENV), env.get(CLIENT_CERT_ENV), env.get(CLIENT_KEY_ENV))
        return cls(address, env.get(TOKEN_ENV) or None, tls=tls, **options)

    def with_token(self, token: str | None) -> PiiVault:
        """The same channel with another caller's token (closing the copy leaves the channel open)."""
        _check_token(token)
        other = object.__new__(PiiVault)
        settings = CallSettings(
            token=token,
            default_timeout=self._settings.default_timeout,
            stream_timeout=self._settings.stream_timeout,
            retry=self._settings.retry,
        )
        other._raw_channel = self._raw_channel
        other._init(self.address, self._channel, settings, owns_channel=False)
        return other

    @property
    def retry(self) -> RetryPolicy:
        return self._settings.retry

    def close(self) -> None:
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> PiiVault:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        token = "[secure]" if self._settings.token is not None else None
        return f"PiiVault(address={self.address!r}, token={token})"


def is_loopback(address: str) -> bool:
    """Whether a gRPC target names this machine (``127.0.0.1:50051``, ``[::1]:50051``, ``localhost:…``, unix)."""
    target = address
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    if target.startswith("["):
        host = target[1:].split("]", 1)[0]
    else:
        host = target.rsplit(":", 1)[0] if target.count(":") == 1 else target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_token(token: str | None) -> None:
    # Metadata values must be printable ASCII; say so without echoing the token.
    if token is not None and (not token or not token.isascii() or not token.isprintable() or " " in token):
        raise ValueError("the token must be non-empty printable ASCII without spaces")
