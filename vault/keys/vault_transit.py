"""HashiCorp Vault Transit as the KEK home. The only module in piivault that imports ``hvac``.

The KEK never leaves Vault: a DEK is wrapped by Transit ``encrypt`` (plaintext = base64 of the 32 key bytes) and the
``vault:vN:…`` ciphertext is stored as the wrapped key. Each provider call is one batched HTTP request, whatever the
number of keys. No associated data and no context are sent, because Transit ``rewrap`` cannot carry associated data
(vault#29532): a ciphertext made with it could only be rotated by decrypting it here, which rewrap exists to avoid.

Failures (see ``vault.keys.provider``) come from one table, ``_translate``:

- a per-item failure of decrypt or rewrap (tampered, wrong key, below ``min_decryption_version``) → ``CryptoError``,
  never retried and never a partial result;
- connection errors, timeouts, 5xx, 429 and a sealed Vault → retried with full-jitter backoff, then
  ``ProviderUnavailable``;
- a refusal (403 naming the policy path, 400, 404) → ``ProviderUnavailable`` at once.

Every provider call has a deadline (``deadline_seconds``, retries included): each HTTP request's timeout is cut to what
the deadline leaves, so an unreachable or hanging Vault becomes UNAVAILABLE within 1.5 s (the service promises under
2 s, and the rest of a request needs its share) instead of stalling request threads. ``connect()`` runs the
start-up checks and turns their failures into ``ProviderConfigError``.

No secret reaches a message, a log line or a repr: not the token, the AppRole secret_id, key bytes or ciphertexts.
Messages are built from fixed text, the URL without user info, and ACL paths — never from ``str()`` of an hvac error,
whose text can hold the request body.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import hvac
import requests
import structlog
from hvac import exceptions as hvac_errors
from requests.adapters import HTTPAdapter

from vault.crypto import CryptoError, SecretKey
from vault.keys.provider import KekStatus, ProviderConfigError, ProviderUnavailable, WrappedKey
from vault.observability import vault_call

KEY_TYPE = "aes256-gcm96"
_BACKOFF_BASE_SECONDS = 0.05
# Kept back from the deadline for the work around the HTTP requests, so that the call as a whole ends within it.
_DEADLINE_MARGIN_SECONDS = 0.1
# A retry with less time than this left would only time out.
_MIN_ATTEMPT_SECONDS = 0.05
_CIPHERTEXT_VERSION = re.compile(r"vault:v(\d+):")
_HEALTHY = frozenset({200, 429, 472, 473})  # active, standby, DR secondary, performance standby
# An AppRole token is replaced after this share of its TTL: Vault before ~1.16 answers an expired token with a bare
# "permission denied", indistinguishable from a policy refusal, so waiting for the refusal would not be enough.
_TOKEN_RENEW_SHARE = 0.8

_log = structlog.get_logger("piivault.keys.vault_transit")


@dataclass(frozen=True)
class _Operation:
    """One kind of Vault request, named by the ACL path and capability a policy must grant for it."""

    name: str
    path: str
    capability: str = "update"
    items_fail_as_crypto: bool = False
    denied: str | None = None  # the message for a 403, when "token lacks <capability> on <path>" would mislead


@dataclass(frozen=True)
class TokenPolicy:
    """The token's capabilities against what the provider needs: ``missing`` stops wrapping and unwrapping,
    ``missing_for_rotation`` only stops KEK rotation (a serving token may lack it by design), ``excess`` is more than
    a service token should hold (deleting or exporting the KEK, or a root token)."""

    missing: tuple[str, ...]
    missing_for_rotation: tuple[str, ...]
    excess: tuple[str, ...]


class _KeyMissing(ProviderUnavailable):
    """Vault answered that the transit key does not exist (start-up then creates it)."""


@dataclass(frozen=True)
class _Verdict:
    error: Exception
    retry: bool = False
    relogin: bool = False


def _translate(error: Exception, op: _Operation, where: str) -> _Verdict | None:
    """The one table from hvac and requests failures to piivault's; None for a failure that is a bug of ours."""
    if isinstance(error, requests.exceptions.SSLError):
        return _Verdict(ProviderUnavailable(f"TLS verification of Vault at {where} failed; check the CA bundle"))
    if isinstance(error, requests.exceptions.Timeout):
        return _Verdict(ProviderUnavailable(f"Vault at {where} timed out"), retry=True)
    if isinstance(error, requests.exceptions.ConnectionError):
        return _Verdict(ProviderUnavailable(f"Vault at {where} is unreachable"), retry=True)
    if isinstance(error, requests.exceptions.RequestException):
        return _Verdict(ProviderUnavailable(f"cannot send requests to Vault at {where}; check the URL"))
    if not isinstance(error, hvac_errors.VaultError):
        return None
    if isinstance(error, hvac_errors.VaultDown):
        return _Verdict(ProviderUnavailable(f"Vault at {where} is sealed or unavailable (HTTP 503)"), retry=True)
    if isinstance(error, hvac_errors.RateLimitExceeded):
        return _Verdict(ProviderUnavailable(f"Vault at {where} rate-limited {op.name} (HTTP 429)"), retry=True)
    if isinstance(error, hvac_errors.InternalServerError | hvac_errors.BadGateway):
        return _Verdict(ProviderUnavailable(f"Vault at {where} failed {op.name} with a server error"), retry=True)
    if isinstance(error, hvac_errors.VaultNotInitialized):
        return _Verdict(ProviderUnavailable(f"Vault at {where} is not initialized"))
    reasons = _vault_errors(error)
    if isinstance(error, hvac_errors.Forbidden | hvac_errors.Unauthorized):
        if "invalid token" in reasons or "expired" in reasons:
            return _Verdict(ProviderUnavailable("Vault rejected the token as invalid or expired"), relogin=True)
        return _Verdict(ProviderUnavailable(op.denied or f"token lacks '{op.capability}' on {op.path}"))
    if isinstance(error, hvac_errors.InvalidPath):
        if "no handler for route" in reasons:
            return _Verdict(ProviderUnavailable(f"Vault has no secrets engine serving {op.path}; check the mount"))
        return _Verdict(_KeyMissing(f"{op.path} does not exist"))
    if isinstance(error, hvac_errors.InvalidRequest):
        return _Verdict(_rejection(error, reasons, op))
    if isinstance(error, hvac_errors.UnexpectedError):
        return _Verdict(ProviderUnavailable(f"Vault at {where} answered {op.name} with an unexpected status"))
    return None


def _rejection(error: Exception, reasons: str, op: _Operation) -> Exception:
    """A 400. A failing batch decrypt answers it with per-item errors in the body, and no ``errors`` list."""
    if _has_batch_results(getattr(error, "json", None)):
        return CryptoError() if op.items_fail_as_crypto else ProviderUnavailable(f"Vault refused {op.name} of a key")
    if "invalid role or secret" in reasons or "missing role_id" in reasons or "missing secret_id" in reasons:
        return ProviderUnavailable("Vault refused the AppRole login; check role_id and secret_id")
    if "cannot set min decryption version" in reasons:
        return ValueError("minimum decryption version must lie between the current minimum and the latest")
    if "not found" in reasons or "no existing key" in reasons:
        return _KeyMissing(f"the transit key behind {op.path} does not exist")
    return ProviderUnavailable(f"Vault refused {op.name} on {op.path} (HTTP 400)")


def _vault_errors(error: Exception) -> str:
    """Vault's own ``errors`` texts, lower-cased, for matching only: they never go into a message."""
    errors = getattr(error, "errors", None)
    if not isinstance(errors, list):
        return ""
    return " ".join(str(item) for item in errors).lower()


def _has_batch_results(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("data"), dict) and "batch_results" in body["data"]


class _BudgetedTransport(HTTPAdapter):
    """Counts every request sent to Vault and cuts its timeout to what is left of the current call's deadline."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(max_retries=0)  # retries are ours: bounded, jittered, within the deadline
        self._timeout_seconds = timeout_seconds
        self._deadline = threading.local()
        self._count_lock = threading.Lock()
        self._sent = 0

    @property
    def sent(self) -> int:
        with self._count_lock:
            return self._sent

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        previous: float | None = getattr(self._deadline, "at", None)
        self._deadline.at = at if previous is None else min(previous, at)
        try:
            yield
        finally:
            self._deadline.at = previous

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        limit = self._timeout_seconds
        at: float | None = getattr(self._deadline, "at", None)
        if at is not None:
            limit = min(limit, at - time.monotonic())
            if limit <= 0:
                raise requests.exceptions.Timeout("the call's deadline passed before the request was sent")
        with self._count_lock:
            self._sent += 1
        return super().send(request, stream=stream, timeout=(limit, limit), verify=verify, cert=cert, proxies=proxies)


class VaultTransitKeyProvider:
    """KEK versions held by a Vault Transit key; wrap, unwrap and rewrap are one batched HTTP request each.

    Authenticates with a token, or with AppRole (``role_id`` and ``secret_id``): the AppRole token is fetched at the
    first call, replaced after 80 % of its TTL, and fetched again (once per call) when Vault calls it invalid or
    expired. Construct with ``connect()`` to run the start-up checks; the constructor itself sends nothing.
    """

    name = "vault-transit"

    def __init__(
        self,
        url: str,
        *,
        mount: str = "transit",
        key_name: str = "piivault-kek",
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        create_key: bool = True,
        timeout_seconds: float = 1.0,
        retries: int = 2,
        deadline_seconds: float = 1.5,
        verify: bool | str = True,
    ) -> None:
        if not url:
            raise ProviderConfigError("the Vault Transit provider needs the Vault URL")
        if not token and not role_id:
            raise ProviderConfigError("the Vault Transit provider needs a token or an AppRole role_id and secret_id")
        if token and role_id:
            raise ProviderConfigError("give the Vault Transit provider either a token or an AppRole, not both")
        if timeout_seconds <= 0 or retries < 0:
            raise ProviderConfigError("the Vault timeout must be positive and retries at least 0")
        if deadline_seconds <= _DEADLINE_MARGIN_SECONDS + _MIN_ATTEMPT_SECONDS:
            raise ProviderConfigError("the Vault call deadline is too short to send a request")
        self._where = _display_url(url)
        self._mount = mount.strip("/")
        self._key_name = key_name
        self._role_id = role_id or None
        self._secret_id = secret_id
        self._create_key = create_key
        self._retries = retries
        self._deadline_seconds = deadline_seconds
        self._transport = _BudgetedTransport(timeout_seconds)
        session = requests.Session()
        session.mount("http://", self._transport)
        session.mount("https://", self._transport)
        session.verify = verify  # hvac prefers a truthy session.verify over its own argument
        self._session = session
        # url and token always explicit: hvac would otherwise fall back to VAULT_ADDR, VAULT_TOKEN or ~/.vault-token.
        self._client = hvac.Client(url=url, token=token or "", session=session, timeout=timeout_seconds, verify=verify)
        self._login_lock = threading.Lock()
        self._token_generation = 0 if self._role_id else 1  # 0: the AppRole token has not been fetched yet
        self._token_renew_at = float("inf")

        def operation(name: str, path: str, capability: str = "update", *, crypto: bool = False) -> _Operation:
            return _Operation(name, f"{self._mount}/{path}", capability, crypto)

        self._read_op = operation("read key", f"keys/{key_name}", "read")
        self._create_op = operation("create key", f"keys/{key_name}")
        self._rotate_op = operation("rotate", f"keys/{key_name}/rotate")
        self._config_op = operation("configure key", f"keys/{key_name}/config")
        self._encrypt_op = operation("encrypt", f"encrypt/{key_name}")
        self._decrypt_op = operation("decrypt", f"decrypt/{key_name}", crypto=True)
        self._rewrap_op = operation("rewrap", f"rewrap/{key_name}", crypto=True)
        self._login_op = _Operation("approle login", "auth/approle/login")
        self._lookup_op = _Operation(
            "token lookup",
            "auth/token/lookup-self",
            "read",
            denied="Vault rejected the token as invalid or expired (auth/token/lookup-self was refused)",
        )
        self._health_op = _Operation("health check", "sys/health", "read")
        self._capabilities_op = _Operation("capabilities check", "sys/capabilities-self")

    def __repr__(self) -> str:
        auth = "approle" if self._role_id else "token"
        return (
            f"VaultTransitKeyProvider(url={self._where!r}, mount={self._mount!r}, key_name={self._key_name!r}, "
            f"auth={auth}, credentials=[secure])"
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        mount: str = "transit",
        key_name: str = "piivault-kek",
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        create_key: bool = True,
        timeout_seconds: float = 1.0,
        retries: int = 2,
        deadline_seconds: float = 1.5,
        verify: bool | str = True,
    ) -> VaultTransitKeyProvider:
        """Build the provider and run the start-up checks (``start``); raises ``ProviderConfigError``."""
        provider = cls(
            url,
            mount=mount,
            key_name=key_name,
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            create_key=create_key,
            timeout_seconds=timeout_seconds,
            retries=retries,
            deadline_seconds=deadline_seconds,
            verify=verify,
        )
        try:
            provider.start()
        except BaseException:
            provider.close()
            raise
        return provider

    def start(self) -> None:
        """Check, in order: reachable, unsealed, token valid, key present (created if allowed), encrypt+decrypt."""
        try:
            self._check_health()
            self._call(self._lookup_op, self._client.auth.token.lookup_self)
            info = self._read_key()
        except ProviderUnavailable as error:
            raise ProviderConfigError(str(error)) from None
        if info is None:
            info = self._create_missing_key()
        if info.get("type") != KEY_TYPE or info.get("derived") is True:
            raise ProviderConfigError(
                f"transit key {self._mount}/keys/{self._key_name} must be a non-derived {KEY_TYPE} key"
            )
        self._check_round_trip()

    def _check_health(self) -> None:
        answer = self._call(self._health_op, lambda: self._client.sys.read_health_status(method="HEAD"))
        status = answer.status_code if isinstance(answer, requests.Response) else 200
        if status == 503:
            raise ProviderConfigError(f"Vault is sealed ({self._where} answers 503 from sys/health); unseal it first")
        if status == 501:
            raise ProviderConfigError(f"Vault at {self._where} is not initialized")
        if status not in _HEALTHY:
            raise ProviderConfigError(f"Vault at {self._where} is unhealthy (sys/health answered {status})")

    def _create_missing_key(self) -> Mapping[str, object]:
        where = f"{self._mount}/keys/{self._key_name}"
        if not self._create_key:
            raise ProviderConfigError(f"transit key {where} does not exist and key creation is turned off")
        try:
            self._call(
                self._create_op,
                lambda: self._client.secrets.transit.create_key(
                    name=self._key_name, key_type=KEY_TYPE, mount_point=self._mount
                ),
            )
            info = self._read_key()  # the create answer is 204 with no body before Vault 1.14
        except ProviderUnavailable as error:
            raise ProviderConfigError(f"cannot create transit key {where}: {error}") from None
        if info is None:
            raise ProviderConfigError(f"transit key {where} is still missing after it was created")
        _log.info("vault transit key created", kek_version=info.get("latest_version"))
        return info

    def _check_round_trip(self) -> None:
        probe = SecretKey.generate()
        try:
            unwrapped = self.unwrap(self.wrap([probe]))
        except ProviderUnavailable as error:
            raise ProviderConfigError(str(error)) from None
        except CryptoError:
            unwrapped = []
        if unwrapped != [probe]:
            raise ProviderConfigError(f"Vault could not decrypt what {self._encrypt_op.path} had just encrypted")

    @property
    def calls(self) -> int:
        return self._transport.sent

    def wrap(self, keys: Sequence[SecretKey]) -> list[WrappedKey]:
        if not keys:
            return []
        batch = [{"plaintext": base64.b64encode(key.reveal()).decode()} for key in keys]
        answer = self._call(
            self._encrypt_op,
            lambda: self._client.secrets.transit.encrypt_data(
                name=self._key_name, batch_input=batch, mount_point=self._mount
            ),
        )
        results = self._batch_results(answer, len(keys), self._encrypt_op)
        if any(item.get("error") for item in results):  # Vault before 1.10 answered 200 here
            raise ProviderUnavailable(f"Vault refused {self._encrypt_op.name} of a key")
        return [self._wrapped(item, self._encrypt_op) for item in results]

    def unwrap(self, wrapped: Sequence[WrappedKey]) -> list[SecretKey]:
        if not wrapped:
            return []
        batch = [{"ciphertext": item.blob} for item in wrapped]
        answer = self._call(
            self._decrypt_op,
            lambda: self._client.secrets.transit.decrypt_data(
                name=self._key_name, batch_input=batch, mount_point=self._mount
            ),
        )
        return [_unwrapped_key(item) for item in self._batch_results(answer, len(wrapped), self._decrypt_op)]

    def rewrap(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        if not wrapped:
            return []
        batch = [{"ciphertext": item.blob} for item in wrapped]
        answer = self._call(
            self._rewrap_op,
            lambda: self._client.secrets.transit.rewrap_data(
                name=self._key_name, ciphertext=None, batch_input=batch, mount_point=self._mount
            ),
        )
        results = self._batch_results(answer, len(wrapped), self._rewrap_op)
        if any(item.get("error") for item in results):  # batch rewrap answers 200 even when items fail
            raise CryptoError()
        return [self._wrapped(item, self._rewrap_op) for item in results]

    def status(self) -> KekStatus:
        info = self._read_key()
        if info is None:
            raise _KeyMissing(f"{self._read_op.path} does not exist")
        versions = info.get("keys")
        latest, minimum = info.get("latest_version"), info.get("min_decryption_version")
        if not isinstance(versions, dict) or not isinstance(latest, int) or not isinstance(minimum, int):
            raise self._unexpected(self._read_op)
        try:
            numbers = tuple(sorted(int(version) for version in versions))
        except ValueError:
            raise self._unexpected(self._read_op) from None
        created = versions.get(str(latest))
        return KekStatus(
            self.name, self._key_name, latest, minimum, numbers, float(created) if isinstance(created, int) else 0.0
        )

    def rotate(self) -> int:
        answer = self._call(
            self._rotate_op,
            lambda: self._client.secrets.transit.rotate_key(name=self._key_name, mount_point=self._mount),
        )
        latest = _data(answer).get("latest_version")
        if isinstance(latest, int):
            return latest
        return self.status().latest_version  # before Vault 1.14 rotate answers 204 with no body

    def set_min_decryption_version(self, version: int) -> None:
        self._call(
            self._config_op,
            lambda: self._client.secrets.transit.update_key_configuration(
                name=self._key_name, min_decryption_version=version, mount_point=self._mount
            ),
        )

    def token_policy(self) -> TokenPolicy:
        """What Vault says this token may do on the paths the provider uses (``sys/capabilities-self``, which
        Vault's built-in default policy grants every token). Read-only; for ``piivault doctor``."""
        needed = [
            (op, essential)
            for op, essential in (
                (self._read_op, True),
                (self._encrypt_op, True),
                (self._decrypt_op, True),
                (self._rewrap_op, False),
                (self._rotate_op, False),
                (self._config_op, False),
            )
        ]
        forbidden = [
            (f"{self._mount}/keys/{self._key_name}", "delete"),
            (f"{self._mount}/export/encryption-key/{self._key_name}", "read"),
            (f"{self._mount}/backup/{self._key_name}", "read"),
        ]
        paths = sorted({op.path for op, _ in needed} | {path for path, _ in forbidden})
        answer = self._call(self._capabilities_op, lambda: self._client.sys.get_capabilities(paths=paths))
        granted = _data(answer) or (answer if isinstance(answer, dict) else {})

        def has(path: str, capability: str) -> bool:
            caps = granted.get(path)
            if not isinstance(caps, list):
                raise self._unexpected(self._capabilities_op)
            return "root" in caps or (capability in caps and "deny" not in caps)

        root = any("root" in caps for caps in granted.values() if isinstance(caps, list))
        return TokenPolicy(
            missing=tuple(
                f"{op.capability} on {op.path}"
                for op, essential in needed
                if essential and not has(op.path, op.capability)
            ),
            missing_for_rotation=tuple(
                f"{op.capability} on {op.path}"
                for op, essential in needed
                if not essential and not has(op.path, op.capability)
            ),
            excess=("root token",) if root else tuple(f"{cap} on {path}" for path, cap in forbidden if has(path, cap)),
        )

    def close(self) -> None:
        self._session.close()

    # -- the one path every request takes ------------------------------------------------------------------------------

    def _call(self, op: _Operation, request: Callable[[], object]) -> object:
        """Run one Vault request with bounded, jittered retries of transient failures, all within the deadline."""
        deadline = time.monotonic() + self._deadline_seconds - _DEADLINE_MARGIN_SECONDS
        with vault_call(op.name), self._transport.deadline(deadline):
            attempt = 0
            relogged = False
            while True:
                generation = self._authenticated(op)
                try:
                    return request()
                except Exception as error:
                    verdict = _translate(error, op, self._where)
                    if verdict is None:
                        raise
                    failure = type(error).__name__  # the type only: an hvac error's text can hold the request body
                # Raised out here, not in the except block, so the hvac error (whose text can hold the request body)
                # is not chained to ours as __context__ and cannot reach a traceback.
                if verdict.relogin and self._role_id and op is not self._login_op and not relogged:
                    relogged = True
                    self._login(generation)
                    continue
                if not verdict.retry or attempt >= self._retries or not _pause_before_retry(attempt, deadline):
                    raise verdict.error
                attempt += 1
                _log.warning("vault transit request retried", error_type=failure, count=attempt)

    def _authenticated(self, op: _Operation) -> int:
        """Fetch the AppRole token on first use and near its expiry; returns the generation of the token to use."""
        generation = self._token_generation
        due = generation == 0 or time.monotonic() >= self._token_renew_at
        if due and self._role_id and op not in (self._login_op, self._health_op):
            self._login(generation)
            generation = self._token_generation
        return generation

    def _login(self, stale_generation: int) -> None:
        with self._login_lock:
            if self._token_generation != stale_generation:
                return  # another thread logged in while this one waited
            answer = self._call(
                self._login_op,
                lambda: self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id),
            )
            auth = answer.get("auth") if isinstance(answer, dict) else None
            ttl = auth.get("lease_duration") if isinstance(auth, dict) else None
            lasts = ttl * _TOKEN_RENEW_SHARE if isinstance(ttl, int) and ttl > 0 else float("inf")
            self._token_renew_at = time.monotonic() + lasts
            self._token_generation = stale_generation + 1
        _log.info("vault approle login", count=stale_generation + 1)

    # -- answers -------------------------------------------------------------------------------------------------------

    def _read_key(self) -> Mapping[str, object] | None:
        """The key's metadata, or None when Vault has no such key (404 with an empty error list)."""
        try:
            answer = self._call(
                self._read_op,
                lambda: self._client.secrets.transit.read_key(name=self._key_name, mount_point=self._mount),
            )
        except _KeyMissing:
            return None
        return _data(answer)

    def _batch_results(self, answer: object, expected: int, op: _Operation) -> list[Mapping[str, object]]:
        results = _data(answer).get("batch_results")
        if not isinstance(results, list) or len(results) != expected:
            raise self._unexpected(op)
        if not all(isinstance(item, dict) for item in results):
            raise self._unexpected(op)
        return results

    def _wrapped(self, item: Mapping[str, object], op: _Operation) -> WrappedKey:
        """``key_version`` is in the answer since Vault 1.5; the ``vault:vN:`` prefix always carries it too."""
        ciphertext, version = item.get("ciphertext"), item.get("key_version")
        match = _CIPHERTEXT_VERSION.match(ciphertext) if isinstance(ciphertext, str) else None
        if match is None or not isinstance(ciphertext, str):
            raise self._unexpected(op)
        return WrappedKey(ciphertext, version if isinstance(version, int) else int(match.group(1)))

    def _unexpected(self, op: _Operation) -> ProviderUnavailable:
        return ProviderUnavailable(f"Vault at {self._where} sent an unexpected answer to {op.name}")


def _data(answer: object) -> Mapping[str, object]:
    data = answer.get("data") if isinstance(answer, dict) else None
    return data if isinstance(data, dict) else {}


def _unwrapped_key(item: Mapping[str, object]) -> SecretKey:
    plaintext = item.get("plaintext")
    if item.get("error") or not isinstance(plaintext, str):  # Vault before 1.10 answered 200 with item errors
        raise CryptoError()
    try:
        return SecretKey(base64.b64decode(plaintext, validate=True))
    except (binascii.Error, ValueError):
        raise CryptoError() from None


def _pause_before_retry(attempt: int, deadline: float) -> bool:
    """Sleep a full-jitter backoff; False when the deadline leaves no room for another attempt."""
    pause = random.uniform(0, _BACKOFF_BASE_SECONDS * 2**attempt)  # noqa: S311 - backoff jitter, not a secret
    if deadline - time.monotonic() - pause < _MIN_ATTEMPT_SECONDS:
        return False
    time.sleep(pause)
    return True


def _display_url(url: str) -> str:
    """The URL for messages: scheme, host and port only (user info or a query could hold a credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "<invalid URL>"
