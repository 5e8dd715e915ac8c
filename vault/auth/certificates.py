"""Client certificates: mTLS as a second way to authenticate. TLS verifies the chain; this registry says who it is.

A registered certificate maps to a principal and a role, like a token. The database keeps only a keyed fingerprint of
the certificate's DER encoding (HMAC-SHA256 under the request-MAC service key), its validity end, and create/revoke
times — never the certificate, its serial number or its subject, which can name a person or a machine. The
fingerprint is keyed because the crypto recipes are the only code that may hash (``vault.crypto``), and because a
plain SHA-256 would let whoever holds a copy of the database confirm that a certificate they have seen is registered.

Authentication results are cached for ``cache_ttl_seconds`` like tokens (a revoked certificate stops working within
that many seconds on every replica); the validity end is checked on every call, cached or not, so an entry never
outlives its certificate.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from vault.auth.roles import ROLES
from vault.auth.tokens import _PRINCIPAL, Principal
from vault.crypto import Mac
from vault.errors import FailedPrecondition, InvalidArgument, NotFound
from vault.storage.db import Database
from vault.storage.models import ClientCertificateRow

CERT_ID_PREFIX = "crt_"
FINGERPRINT_DOMAIN = "client-certificate"
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
_DER_SEQUENCE = b"\x30"  # every DER certificate starts with a SEQUENCE tag; PEM starts with text
_MAX_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    cert_id: str
    principal: str
    role: str
    not_after: dt.datetime
    create_time: dt.datetime
    revoke_time: dt.datetime | None


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    not_after: dt.datetime


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def certificate_der(certificate: bytes | str) -> bytes:
    """The DER encoding of one certificate given as PEM (exactly one block) or DER; ``ValueError`` otherwise."""
    data = certificate.encode("ascii", "replace") if isinstance(certificate, str) else bytes(certificate)
    if data[:1] == _DER_SEQUENCE:
        return data
    blocks = _PEM.findall(data)
    # One block and nothing else PEM-armoured: a file that also holds a private key is refused, not half-read.
    if len(blocks) != 1 or data.count(b"-----BEGIN") != 1:
        raise ValueError("expected exactly one PEM certificate")
    try:
        return base64.b64decode(b"".join(blocks[0].split()), validate=True)
    except binascii.Error:
        raise ValueError("malformed PEM") from None


class ClientCertificates:
    def __init__(
        self,
        database: Database,
        fingerprints: Mac,
        cache_ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._database = database
        self._fingerprints = fingerprints
        self._ttl = cache_ttl_seconds
        self._clock = clock
        self._now = now
        self._cache: dict[bytes, tuple[float, _Entry | None]] = {}
        self._lock = threading.Lock()

    def register(self, certificate: bytes | str, principal: str, role: str) -> CertificateInfo:
        """Register a certificate (PEM or DER) for ``principal`` with ``role``; only its fingerprint is stored."""
        if not _PRINCIPAL.fullmatch(principal):
            raise InvalidArgument.single("principal", "must be 1-64 lower-case letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise InvalidArgument.single("role", "must be one of: " + ", ".join(ROLES))
        try:
            der = certificate_der(certificate)
            not_after = x509.load_der_x509_certificate(der).not_valid_after_utc
        except ValueError:
            raise InvalidArgument.single("certificate", "must be one X.509 certificate, PEM or DER") from None
        now = self._now()
        if not_after <= now:
            raise InvalidArgument.single("certificate", "has expired")
        fingerprint = self._fingerprint(der)
        info = CertificateInfo(CERT_ID_PREFIX + secrets.token_hex(8), principal, role, not_after, now, None)
        try:
            with self._database.write() as connection:
                connection.execute(
                    insert(ClientCertificateRow).values(
                        fingerprint=fingerprint,
                        cert_id=info.cert_id,
                        principal=principal,
                        role=role,
                        not_after=not_after,
                        create_time=now,
                        revoke_time=None,
                    )
                )
        except IntegrityError:
            # Revoked certificates stay revoked: a compromised key must not come back by being registered again.
            raise FailedPrecondition(
                "the certificate is already registered (a revoked certificate cannot be registered again)"
            ) from None
        with self._lock:
            self._cache.pop(fingerprint, None)  # a cached "unknown" must not outlive the registration
        return info

    def authenticate(self, certificate: bytes | str) -> Principal | None:
        """The principal of a registered, unrevoked, unexpired certificate (PEM or DER); ``None`` for anything else."""
        try:
            fingerprint = self._fingerprint(certificate_der(certificate))
        except ValueError:
            return None
        now = self._clock()
        cached = self._cache.get(fingerprint)
        if cached is not None and cached[0] > now:
            entry = cached[1]
        else:
            entry = self._lookup(fingerprint)
            with self._lock:
                if len(self._cache) >= _MAX_CACHE:
                    self._cache.clear()
                self._cache[fingerprint] = (now + self._ttl, entry)
        if entry is None or entry.not_after <= self._now():
            return None
        return entry.principal

    def _lookup(self, fingerprint: bytes) -> _Entry | None:
        with self._database.read() as connection:
            row = connection.execute(
                select(
                    ClientCertificateRow.principal,
                    ClientCertificateRow.role,
                    ClientCertificateRow.cert_id,
                    ClientCertificateRow.not_after,
                ).where(ClientCertificateRow.fingerprint == fingerprint, ClientCertificateRow.revoke_time.is_(None))
            ).first()
        return None if row is None else _Entry(Principal(row.principal, row.role, row.cert_id), row.not_after)

    def _fingerprint(self, der: bytes) -> bytes:
        return self._fingerprints.digest(FINGERPRINT_DOMAIN, der)

    def list(self) -> list[CertificateInfo]:
        with self._database.read() as connection:
            rows = connection.execute(
                select(ClientCertificateRow).order_by(ClientCertificateRow.create_time, ClientCertificateRow.cert_id)
            ).all()
        return [
            CertificateInfo(r.cert_id, r.principal, r.role, r.not_after, r.create_time, r.revoke_time) for r in rows
        ]

    def revoke(self, cert_id: str) -> None:
        with self._database.write() as connection:
            result = connection.execute(
                update(ClientCertificateRow)
                .where(ClientCertificateRow.cert_id == cert_id, ClientCertificateRow.revoke_time.is_(None))
                .values(revoke_time=self._now())
            )
        if result.rowcount != 1:
            raise NotFound("no active client certificate with that cert_id")
        with self._lock:
            self._cache.clear()
