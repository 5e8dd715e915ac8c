"""API tokens. A token is shown once at creation; the database keeps only its SHA-256 digest.

Authentication results are cached for ``cache_ttl_seconds`` so that a busy service does not query the token table on
every call; a revoked token therefore stops working within that many seconds on every replica.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from vault.auth.roles import ROLES
from vault.crypto import token_digest
from vault.errors import InvalidArgument, NotFound, Unauthenticated
from vault.storage.db import Database
from vault.storage.models import ApiTokenRow

TOKEN_PREFIX = "pvt_"  # noqa: S105 - a prefix that lets secret scanners spot leaked tokens, not a secret
_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN = re.compile(r"pvt_[A-Za-z0-9_-]{43}")
_MAX_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    token_id: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token_id: str
    principal: str
    role: str
    secret: str

    def __repr__(self) -> str:
        return f"IssuedToken(token_id={self.token_id!r}, principal={self.principal!r}, secret=[secure])"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    principal: str
    role: str
    create_time: dt.datetime
    revoke_time: dt.datetime | None


class TokenService:
    def __init__(
        self, database: Database, cache_ttl_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database = database
        self._ttl = cache_ttl_seconds
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(self, principal: str, role: str) -> IssuedToken:
        if not _PRINCIPAL.fullmatch(principal):
            raise InvalidArgument.single("principal", "must be 1-64 lower-case letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise InvalidArgument.single("role", "must be one of: " + ", ".join(ROLES))
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "tok_" + secrets.token_hex(8)
        with self._database.write() as connection:
            connection.execute(
                insert(ApiTokenRow).values(
                    token_digest=token_digest(secret),
                    token_id=token_id,
                    principal=principal,
                    role=role,
                    create_time=dt.datetime.now(dt.UTC),
                    revoke_time=None,
                )
            )
        return IssuedToken(token_id, principal, role, secret)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``authorization: Bearer <token>`` value; raises ``Unauthenticated``."""
        if not authorization:
            raise Unauthenticated()
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
            raise Unauthenticated()
        digest = token_digest(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = self._lookup(digest)
            with self._lock:
                if len(self._cache) >= _MAX_CACHE:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise Unauthenticated()
        return principal

    def _lookup(self, digest: bytes) -> Principal | None:
        with self._database.read() as connection:
            row = connection.execute(
                select(ApiTokenRow.principal, ApiTokenRow.role, ApiTokenRow.token_id).where(
                    ApiTokenRow.token_digest == digest, ApiTokenRow.revoke_time.is_(None)
                )
            ).first()
        return None if row is None else Principal(row.principal, row.role, row.token_id)

    def list(self) -> list[TokenInfo]:
        with self._database.read() as connection:
            rows = connection.execute(select(ApiTokenRow).order_by(ApiTokenRow.create_time)).all()
        return [TokenInfo(r.token_id, r.principal, r.role, r.create_time, r.revoke_time) for r in rows]

    def revoke(self, token_id: str) -> None:
        with self._database.write() as connection:
            result = connection.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.token_id == token_id, ApiTokenRow.revoke_time.is_(None))
                .values(revoke_time=dt.datetime.now(dt.UTC))
            )
        if result.rowcount != 1:
            raise NotFound("no active token with that token_id")
        with self._lock:
            self._cache.clear()
