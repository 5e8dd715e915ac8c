"""In-process HashiCorp Vault server speaking the Transit API, for piivault's tests.

No Vault binary can be installed where piivault's tests run, so this module stands in for one: the tests drive it
through the real ``hvac`` client, which means the server must reproduce the wire behaviour ``hvac`` and piivault's
Vault key provider depend on. The authoritative description of that behaviour is ``/work/shared/VAULT_TRANSIT.md``
(section numbers below refer to it); this module follows it, with Vault 1.14+ as the default and a ``pre_1_14``
switch for the older 204 answers.

Implemented subset:

* Envelope and errors (§1): ``/v1/`` paths, the ``LIST`` verb and ``?list=true``, success envelopes with all keys
  (``warnings: null``, ``mount_type``), ``{"errors": [...]}`` bodies, ``Content-Type: application/json`` exactly,
  multierror text for 403/500, ``{"errors": []}`` for a missing read, 405 for a wrong method, 404 "no handler for
  route" outside the mount, the unrecognized-parameters warning, and the key-name regex.
* Transit (§3-§9) on one mount (default ``transit``): create/read/list/delete keys, per-key config with every
  ordering rule, rotate, trim, ``config/keys`` (``disable_upsert``), encrypt/decrypt single and batch with the
  200/400/500 and ``partial_failure_response_code`` rules, rewrap (no associated data; batch always 200), datakey,
  and ed25519 sign/verify. Key types: ``aes128-gcm96``, ``aes256-gcm96``, ``chacha20-poly1305`` and ``ed25519``;
  derived keys (HKDF-SHA256 on the context) and convergent encryption (nonce from an HMAC of the plaintext).
  Ciphertexts are ``vault:v<N>:`` + base64(nonce || ciphertext || tag).
* Auth and ACL (§1.4, §12): ``X-Vault-Token`` or ``Authorization: Bearer``, per-token policies (path glob ->
  capabilities, the most specific rule wins), the create-vs-update rule for encrypt, AppRole login,
  ``auth/token/lookup-self`` and ``auth/token/renew-self``, token TTLs against an adjustable clock.
* System (§10): ``sys/health`` (GET/HEAD, status codes and query overrides), ``sys/seal-status``, ``sys/init``; a
  sealed node answers every other path with 503 ``Vault is sealed``.
* Fault injection for tests: sealing, standby, latency, refusing connections, and failing the next N requests.

Not implemented: RSA/ECDSA/HMAC/CMAC key types (accepted by real Vault; here they get a 400 saying so), HMAC
verify, key export/backup/restore, managed keys, namespaces (always the CE 403), response wrapping, auto-rotation,
leases, and every secrets engine or auth method other than the ones above.

Request counters are keyed by the name of the handler that served the request, e.g. ``calls["encrypt"]``,
``calls["create_key"]``, ``calls["health"]``; requests that matched no handler count as ``"unsupported"``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["TransitServer"]

JSONObject = dict[str, Any]
_T = TypeVar("_T")

_MAX_BODY_BYTES = 32 * 1024 * 1024
_NAME = r"\w(?:[\w.-]*\w)?"
_NONCE_BYTES = 12
_DEFAULT_TOKEN_TTL = 2764800  # Vault's system default of 768h, used when a role sets no TTL.

_AEAD_KEY_BYTES = {"aes128-gcm96": 16, "aes256-gcm96": 32, "chacha20-poly1305": 32}
_SIGNING_KEY_TYPES = frozenset({"ed25519"})
_SUPPORTED_KEY_TYPES = frozenset(_AEAD_KEY_BYTES) | _SIGNING_KEY_TYPES
# Types real Vault CE accepts but this server does not emulate; they get a distinct 400 so a test can't mistake
# them for Vault's "unknown key type".
_UNEMULATED_KEY_TYPES = frozenset(
    {"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096", "hmac", "aes128-cmac", "aes256-cmac"}
)
_HASH_ALGORITHMS = frozenset(
    {"none", "sha1", "sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-224", "sha3-256", "sha3-384", "sha3-512"}
)
# The serving token's policy from README "Running against HashiCorp Vault" (transit at transit/, key piivault-kek),
# for tests that give the provider exactly what a deployment would.
KEK = "piivault-kek"
SERVING_POLICY: dict[str, list[str]] = {
    f"transit/keys/{KEK}": ["read", "update"],
    f"transit/keys/{KEK}/rotate": ["update"],
    f"transit/keys/{KEK}/config": ["update"],
    f"transit/encrypt/{KEK}": ["update"],
    f"transit/decrypt/{KEK}": ["update"],
    f"transit/rewrap/{KEK}": ["update"],
}

_CAPABILITIES = frozenset({"create", "read", "update", "delete", "list", "patch", "sudo", "deny"})

_MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
    "per-request information must be included in order to perform operations with the key"
)
_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
_AUTH_FAILED = "cipher: message authentication failed"
_MIXED_CONTEXT = "context should be set either in all the request blocks or in none"


# --------------------------------------------------------------------------------------------------------------------
# Errors


def _multierror(*messages: str) -> str:
    """Render messages the way Go's hashicorp/go-multierror does; Vault wraps 403 and 500 texts in this form."""
    header = "1 error occurred" if len(messages) == 1 else f"{len(messages)} errors occurred"
    return header + ":\n" + "".join(f"\t* {message}\n" for message in messages) + "\n"


class _VaultError(Exception):
    """Aborts a request with the error envelope ``{"errors": [...]}``."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors


def _bad_request(message: str) -> _VaultError:
    return _VaultError(400, [message])


def _internal(message: str) -> _VaultError:
    return _VaultError(500, [_multierror(message)])


def _permission_denied() -> _VaultError:
    return _VaultError(403, [_multierror("permission denied")])


class _ItemError(Exception):
    """Failure of one (possibly batch) item; internal failures become HTTP 500 rather than 400."""

    def __init__(self, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.internal = internal

    def to_vault_error(self) -> _VaultError:
        return _internal(self.message) if self.internal else _bad_request(self.message)


# --------------------------------------------------------------------------------------------------------------------
# Base64 as Go decodes it: Vault reports Go's exact error offset ("illegal base64 data at input byte N").

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = frozenset(b"\r\n")
_PAD = ord("=")


class _B64Error(ValueError):
    pass


def _skip_newlines(src: bytes, index: int) -> int:
    while index < len(src) and src[index] in _NEWLINES:
        index += 1
    return index


def _go_padding_error(src: bytes, index: int, filled: int) -> int | None:
    """Finish a quantum that hit ``=`` after ``filled`` data characters; returns Go's error offset, if any."""
    if filled == 2:
        index = _skip_newlines(src, index)
        if index == len(src):
            return len(src)
        if src[index] != _PAD:
            return index - 1
        index += 1
    index = _skip_newlines(src, index)
    return index if index < len(src) else None


def _go_b64_error_offset(src: bytes) -> int | None:
    """Byte offset at which Go's ``base64.StdEncoding`` rejects ``src``, or None if it decodes."""
    index = 0
    while True:
        filled = 0
        while filled < 4:
            if index == len(src):
                return None if filled == 0 else index - filled
            char = src[index]
            index += 1
            if char in _B64_ALPHABET:
                filled += 1
            elif char in _NEWLINES:
                continue
            elif char != _PAD or filled < 2:
                return index - 1
            else:
                return _go_padding_error(src, index, filled)


def _b64decode(text: str) -> bytes:
    raw = text.encode()
    offset = _go_b64_error_offset(raw)
    if offset is not None:
        raise _B64Error(f"illegal base64 data at input byte {offset}")
    return base64.b64decode(raw.replace(b"\r", b"").replace(b"\n", b""), validate=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _decode_item_b64(value: str, *, prefix: str = "") -> bytes:
    try:
        return _b64decode(value)
    except _B64Error as error:
        raise _ItemError(prefix + str(error)) from None


# --------------------------------------------------------------------------------------------------------------------
# Loose field coercion, mirroring Vault's framework.FieldData ("2" is an int, "true" a bool, null the zero value).

_TRUE_STRINGS = frozenset({"1", "t", "T", "true", "True", "TRUE"})
_FALSE_STRINGS = frozenset({"", "0", "f", "F", "false", "False", "FALSE"})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _to_int(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d*\s*", value):
        return int(value.strip() or "0")
    raise ValueError(value)


def _to_bool(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value in _TRUE_STRINGS | _FALSE_STRINGS:
        return value in _TRUE_STRINGS
    raise ValueError(value)


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(value)


def _to_seconds(value: Any) -> int:
    """Parse a Vault duration: integer seconds or a Go duration string such as ``"24h"`` or ``"1h30m"``."""
    if not isinstance(value, str) or re.fullmatch(r"\s*[+-]?\d*\s*", value):
        return _to_int(value)
    if not re.fullmatch(f"(?:{_DURATION_PART.pattern})+", value):
        raise ValueError(value)
    return int(sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(value)))


class _Fields:
    """Typed access to a request body; a conversion failure is a 400 like Vault's field validation."""

    def __init__(self, raw: JSONObject) -> None:
        self.raw = raw

    def has(self, name: str) -> bool:
        return name in self.raw

    def string(self, name: str) -> str:
        return self._convert(name, _to_str, "")

    def integer(self, name: str, default: int = 0) -> int:
        return self._convert(name, _to_int, default)

    def boolean(self, name: str, default: bool = False) -> bool:
        return self._convert(name, _to_bool, default)

    def seconds(self, name: str) -> int:
        return self._convert(name, _to_seconds, 0)

    def _convert(self, name: str, convert: Callable[[Any], _T], default: _T) -> _T:
        if name not in self.raw:
            return default
        try:
            return convert(self.raw[name])
        except ValueError:
            raise _bad_request(
                f'Field validation failed: error converting input {self.raw[name]!r} for field "{name}"'
            ) from None


def _parse_json_body(body: bytes) -> JSONObject:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise _bad_request(f"failed to parse JSON input: {error}") from None
    if not isinstance(parsed, dict):
        raise _bad_request("failed to parse JSON input: body must be a JSON object")
    return parsed


# --------------------------------------------------------------------------------------------------------------------
# Batch items. Vault decodes them strictly and a malformed item fails the whole request with a bare error (500).


@dataclass(frozen=True)
class _ItemSpec:
    strings: frozenset[str]
    ints: frozenset[str] = frozenset()
    required: str | None = None
    missing_message: str = ""
    null_required_ok: bool = False


def _go_type_name(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "json.Number"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}" if isinstance(value, dict) else "string"


def _parse_item(index: int, item: Any, spec: _ItemSpec) -> JSONObject:
    where = f"failed to parse batch input: '[{index}]"
    if not isinstance(item, dict):
        raise _internal(f"{where}' expected a map, got '{_go_type_name(item)}'")
    if spec.required is not None and spec.required not in item:
        raise _internal(f"{where}.{spec.required}' {spec.missing_message}")
    parsed: JSONObject = {}
    for key in spec.strings | spec.ints:
        if key not in item:
            continue
        value = item[key]
        if value is None and key == spec.required and spec.null_required_ok:
            parsed[key] = ""
        elif key in spec.ints and not isinstance(value, (bool, dict, list)) and value is not None:
            parsed[key] = _strict_int(value, f"{where}.{key}'")
        elif isinstance(value, str):
            parsed[key] = value
        else:
            expected = "int" if key in spec.ints else "string"
            got = _go_type_name(value)
            raise _internal(f"{where}.{key}' expected type '{expected}', got unconvertible type '{got}'")
    return parsed


def _strict_int(value: Any, where: str) -> int:
    try:
        return _to_int(value)
    except ValueError:
        raise _internal(f"{where} cannot parse {value!r} as int") from None


def _request_items(fields: _Fields, spec: _ItemSpec) -> tuple[list[JSONObject], bool]:
    """Return the request's items and whether it was a batch; top-level fields are ignored in batch mode."""
    raw_batch = fields.raw.get("batch_input")
    if raw_batch is None:
        single: JSONObject = {name: fields.string(name) for name in spec.strings}
        single.update({name: fields.integer(name) for name in spec.ints})
        return [single], False
    if not isinstance(raw_batch, list):
        raise _internal(f"failed to parse batch input: expected a list, got '{_go_type_name(raw_batch)}'")
    items = [_parse_item(index, item, spec) for index, item in enumerate(raw_batch)]
    if not items:
        raise _bad_request("missing batch input to process")
    return items, True


def _check_context_consistency(items: list[JSONObject]) -> None:
    # Vault decides from item 0 whether contexts are expected, then demands the same of every item.
    expected = bool(items[0].get("context"))
    if any(bool(item.get("context")) != expected for item in items):
        raise _bad_request(_MIXED_CONTEXT)


@dataclass
class _BatchOutcome:
    results: list[JSONObject] = field(default_factory=list)
    user_error: bool = False
    internal_error: bool = False
    first_internal: str = ""

    @property
    def failed(self) -> bool:
        return any("error" in result for result in self.results)

    @property
    def any_success(self) -> bool:
        return any("error" not in result for result in self.results)


def _run_items(
    items: list[JSONObject], work: Callable[[int, JSONObject], JSONObject], failure: JSONObject
) -> _BatchOutcome:
    """Apply ``work`` to every item in order, turning item errors into per-item ``error`` results."""
    outcome = _BatchOutcome()
    for index, item in enumerate(items):
        reference = item.get("reference", "")
        try:
            outcome.results.append({**work(index, item), "reference": reference})
        except _ItemError as error:
            outcome.results.append({**failure, "error": error.message, "reference": reference})
            if error.internal:
                outcome.internal_error = True
                outcome.first_internal = outcome.first_internal or error.message
            else:
                outcome.user_error = True
    return outcome


def _single_result(outcome: _BatchOutcome, *keys: str) -> JSONObject:
    result = outcome.results[0]
    if "error" in result:
        raise _ItemError(result["error"], internal=outcome.internal_error).to_vault_error()
    return {key: result[key] for key in keys}


# --------------------------------------------------------------------------------------------------------------------
# Transit keys


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_material(key_type: str) -> bytes:
    # ed25519 keys are stored as their 32-byte private seed.
    return secrets.token_bytes(_AEAD_KEY_BYTES.get(key_type, 32))


def _aead(key_type: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return ChaCha20Poly1305(key) if key_type == "chacha20-poly1305" else AESGCM(key)


def _check_rotate_period(seconds: int) -> None:
    if seconds != 0 and seconds < 3600:
        raise _bad_request("auto rotate period must be 0 to disable or at least an hour")


@dataclass
class _KeyVersion:
    material: bytes
    created: float


@dataclass
class _TransitKey:
    """One named transit key ("policy" in Vault's source) with all of its versions."""

    name: str
    key_type: str
    derived: bool = False
    convergent: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    auto_rotate_period: int = 0
    deletion_allowed: bool = False
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    min_available_version: int = 0
    latest_version: int = 0
    # Versions below min_decryption_version stay here (Vault's archive) until trimmed.
    versions: dict[int, _KeyVersion] = field(default_factory=dict)

    @property
    def is_aead(self) -> bool:
        return self.key_type in _AEAD_KEY_BYTES

    @property
    def can_sign(self) -> bool:
        return self.key_type in _SIGNING_KEY_TYPES

    def rotate(self, now: float) -> None:
        self.latest_version += 1
        self.versions[self.latest_version] = _KeyVersion(_new_material(self.key_type), now)

    def encrypt(self, plaintext: bytes, version: int, context: bytes, aad: bytes | None) -> tuple[str, int]:
        if not self.is_aead:
            raise _ItemError(f"message encryption not supported for key type {self.key_type}")
        version = self._writable_version(version, "encryption")
        key = self._material(version, context)
        # Convergent keys must map equal (context, plaintext) pairs to equal ciphertexts, hence a derived nonce.
        if self.convergent:
            nonce = hmac.new(key, plaintext, hashlib.sha256).digest()[:_NONCE_BYTES]
        else:
            nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = _aead(self.key_type, key).encrypt(nonce, plaintext, aad)
        return f"vault:v{version}:{_b64encode(nonce + sealed)}", version

    def decrypt(self, ciphertext: str, context: bytes, aad: bytes | None) -> bytes:
        if not self.is_aead:
            raise _ItemError(f"message decryption not supported for key type {self.key_type}")
        version, payload = self._split_versioned(ciphertext, "ciphertext")
        try:
            blob = _b64decode(payload)
        except _B64Error:
            raise _ItemError("invalid ciphertext: could not decode base64") from None
        key = self._material(version, context)
        if len(blob) < _NONCE_BYTES:
            raise _ItemError("invalid ciphertext length")
        try:
            return _aead(self.key_type, key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise _ItemError(_AUTH_FAILED) from None

    def sign(self, data: bytes, version: int, context: bytes) -> tuple[str, int]:
        if not self.can_sign:
            raise _ItemError(f"message signing not supported for key type {self.key_type}")
        version = self._writable_version(version, "signing")
        signature = Ed25519PrivateKey.from_private_bytes(self._material(version, context)).sign(data)
        return f"vault:v{version}:{_b64encode(signature)}", version

    def verify(self, data: bytes, signature: str, context: bytes) -> bool:
        if not self.can_sign:
            raise _ItemError(f"message verification not supported for key type {self.key_type}")
        version, payload = self._split_versioned(signature, "signature")
        try:
            raw = _b64decode(payload)
        except _B64Error:
            raise _ItemError("invalid base64 signature value") from None
        public = Ed25519PrivateKey.from_private_bytes(self._material(version, context)).public_key()
        try:
            public.verify(raw, data)
        except InvalidSignature:
            return False
        return True

    def describe(self, context: bytes = b"") -> JSONObject:
        """The ``data`` of a read-key response (§3.2)."""
        data: JSONObject = {
            "name": self.name,
            "type": self.key_type,
            "keys": {str(version): self._describe_version(version, context) for version in self.visible_versions()},
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "min_available_version": self.min_available_version,
            "deletion_allowed": self.deletion_allowed,
            "derived": self.derived,
            "exportable": self.exportable,
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "imported_key": False,
            "supports_encryption": self.is_aead,
            "supports_decryption": self.is_aead,
            "supports_derivation": True,
            "supports_signing": self.can_sign,
            "auto_rotate_period": self.auto_rotate_period,
        }
        if self.derived:
            data.update(kdf="hkdf_sha256", convergent_encryption=self.convergent)
            if self.convergent:
                data["convergent_encryption_version"] = 3
        return data

    def visible_versions(self) -> list[int]:
        return sorted(version for version in self.versions if version >= self.min_decryption_version)

    def _describe_version(self, version: int, context: bytes) -> int | JSONObject:
        entry = self.versions[version]
        if not self.can_sign:
            return int(entry.created)
        public_key = ""
        if context or not self.derived:
            seed = self._material(version, context)
            raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            public_key = _b64encode(raw)
        return {
            "name": "ed25519",
            "public_key": public_key,
            "certificate_chain": "",
            "creation_time": _rfc3339(entry.created),
            "hybrid_public_key": "",
        }

    def _writable_version(self, requested: int, purpose: str) -> int:
        if requested == 0:
            return self.latest_version
        if requested < 0:
            raise _ItemError(f"requested version for {purpose} is negative")
        if requested > self.latest_version:
            raise _ItemError(f"requested version for {purpose} is higher than the latest key version")
        if requested < self.min_encryption_version:
            raise _ItemError(f"requested version for {purpose} is less than the minimum encryption key version")
        return requested

    def _split_versioned(self, value: str, kind: str) -> tuple[int, str]:
        """Check a ``vault:vN:payload`` string in the order of Vault's keysutil (§5.3)."""
        if not value.startswith("vault:v"):
            raise _ItemError(f"invalid {kind}: no prefix")
        parts = value[len("vault:v") :].split(":", 1)
        if len(parts) != 2:
            raise _ItemError(f"invalid {kind}: wrong number of fields")
        if not re.fullmatch(r"[+-]?\d+", parts[0]):
            raise _ItemError(f"invalid {kind}: version number could not be decoded")
        version = int(parts[0]) or 1  # Vault reads v0 as v1.
        if version > self.latest_version:
            raise _ItemError(f"invalid {kind}: version is too new")
        if version < self.min_decryption_version:
            raise _ItemError(_TOO_OLD)
        return version, parts[1]

    def _material(self, version: int, context: bytes) -> bytes:
        # Archived versions (below min_decryption_version) are not in Vault's working key set either.
        entry = self.versions.get(version)
        if entry is None or version < self.min_decryption_version:
            raise _ItemError("no such key version", internal=True)
        if not self.derived:
            return entry.material
        if not context:
            raise _ItemError(_MISSING_CONTEXT)
        return HKDF(algorithm=hashes.SHA256(), length=len(entry.material), salt=None, info=context).derive(
            entry.material
        )


# --------------------------------------------------------------------------------------------------------------------
# Routing

_HandlerFn = Callable[["_Call"], "_Reply"]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JSONObject | None = None


@dataclass
class _Call:
    """One routed request as an endpoint handler sees it."""

    operation: str
    params: dict[str, str]
    fields: _Fields
    query: dict[str, str]
    token: _Token | None
    mount_type: str
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.params["name"]

    def respond(
        self,
        data: JSONObject | None,
        *,
        status: int = 200,
        auth: JSONObject | None = None,
        mount_type: str | None = None,
    ) -> _Reply:
        body: JSONObject = {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": list(self.warnings) or None,
            "auth": auth,
            "mount_type": self.mount_type if mount_type is None else mount_type,
        }
        return _Reply(status, body)


@dataclass(frozen=True)
class _Route:
    """A path pattern, its operation -> handler table and the body fields it knows."""

    pattern: re.Pattern[str]
    operations: Mapping[str, _HandlerFn]
    fields: frozenset[str] = frozenset()
    exists: Callable[[dict[str, str]], bool] | None = None  # Vault's ExistenceCheck: decides create vs update
    unauthenticated: bool = False
    works_sealed: bool = False
    mount_type: str = "transit"

    def handler_name(self, operation: str | None) -> str:
        handler = self.operations.get(operation or "")
        return getattr(handler, "__name__", "unsupported")


def _path(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


_KEY = f"(?P<name>{_NAME})"

_ENCRYPT_ITEMS = _ItemSpec(
    strings=_fields("plaintext", "context", "nonce", "associated_data", "reference"),
    ints=_fields("key_version"),
    required="plaintext",
    missing_message="missing plaintext to encrypt",
)
_DECRYPT_ITEMS = _ItemSpec(
    strings=_fields("ciphertext", "context", "nonce", "associated_data", "reference"),
    required="ciphertext",
    missing_message="missing ciphertext to decrypt",
    null_required_ok=True,
)
# No associated_data: Vault's rewrap doesn't know the field (§6), so AAD ciphertexts fail authentication.
_REWRAP_ITEMS = _ItemSpec(strings=_fields("ciphertext", "context", "nonce", "reference"), ints=_fields("key_version"))
_SIGN_ITEMS = _ItemSpec(strings=_fields("input", "context", "reference"))
_VERIFY_ITEMS = _ItemSpec(strings=_fields("input", "signature", "hmac", "context", "reference"))


class _TransitEngine:
    """The transit mount: keys plus the endpoint handlers. Handlers run with the server lock held."""

    def __init__(self, clock: Callable[[], float], *, pre_1_14: bool) -> None:
        self._clock = clock
        self._pre_1_14 = pre_1_14
        self.keys: dict[str, _TransitKey] = {}
        self.disable_upsert = False
        self.routes = [
            _Route(_path("keys/?"), {"list": self.list_keys}),
            _Route(
                _path(f"keys/{_KEY}"),
                {"read": self.read_key, "update": self.create_key, "delete": self.delete_key},
                _fields(
                    "type",
                    "derived",
                    "convergent_encryption",
                    "exportable",
                    "allow_plaintext_backup",
                    "auto_rotate_period",
                    "key_size",
                    "context",
                    "managed_key_name",
                    "managed_key_id",
                ),
            ),
            _Route(
                _path(f"keys/{_KEY}/config"),
                {"update": self.configure_key},
                _fields(
                    "min_decryption_version",
                    "min_encryption_version",
                    "deletion_allowed",
                    "exportable",
                    "allow_plaintext_backup",
                    "auto_rotate_period",
                ),
            ),
            _Route(
                _path(f"keys/{_KEY}/rotate"), {"update": self.rotate_key}, _fields("managed_key_name", "managed_key_id")
            ),
            _Route(_path(f"keys/{_KEY}/trim"), {"update": self.trim_key}, _fields("min_available_version")),
            _Route(
                _path("config/keys"),
                {"read": self.read_keys_config, "update": self.write_keys_config},
                _fields("disable_upsert"),
            ),
            _Route(
                _path(f"encrypt/{_KEY}"),
                {"create": self.encrypt, "update": self.encrypt},
                _fields(
                    "plaintext",
                    "context",
                    "key_version",
                    "nonce",
                    "associated_data",
                    "batch_input",
                    "type",
                    "convergent_encryption",
                    "partial_failure_response_code",
                ),
                exists=lambda params: params["name"] in self.keys,
            ),
            _Route(
                _path(f"decrypt/{_KEY}"),
                {"update": self.decrypt},
                _fields(
                    "ciphertext", "context", "nonce", "associated_data", "batch_input", "partial_failure_response_code"
                ),
            ),
            _Route(
                _path(f"rewrap/{_KEY}"),
                {"update": self.rewrap},
                _fields("ciphertext", "context", "key_version", "nonce", "batch_input"),
            ),
            _Route(
                _path(f"datakey/(?P<kind>{_NAME})/{_KEY}"),
                {"update": self.datakey},
                _fields("context", "nonce", "bits", "key_version"),
            ),
            _Route(
                _path(f"sign/{_KEY}(?:/(?P<algorithm>.+))?"),
                {"update": self.sign},
                _fields(
                    "input",
                    "key_version",
                    "hash_algorithm",
                    "algorithm",
                    "context",
                    "prehashed",
                    "signature_algorithm",
                    "marshaling_algorithm",
                    "salt_length",
                    "batch_input",
                ),
            ),
            _Route(
                _path(f"verify/{_KEY}(?:/(?P<algorithm>.+))?"),
                {"update": self.verify},
                _fields(
                    "input",
                    "signature",
                    "hmac",
                    "hash_algorithm",
                    "algorithm",
                    "context",
                    "prehashed",
                    "signature_algorithm",
                    "marshaling_algorithm",
                    "salt_length",
                    "batch_input",
                ),
            ),
        ]

    # -- helpers ------------------------------------------------------------------------------------------------------

    def new_key(self, name: str, key_type: str, **options: Any) -> _TransitKey:
        key = _TransitKey(name=name, key_type=key_type, **options)
        key.rotate(self._clock())
        self.keys[name] = key
        return key

    def _require(self, name: str, message: str) -> _TransitKey:
        key = self.keys.get(name)
        if key is None:
            raise _bad_request(message)
        return key

    def _key_reply(self, call: _Call, key: _TransitKey) -> _Reply:
        # Vault 1.14 (PR #20652) began answering create/rotate/config/trim with the key; before that, 204.
        return _Reply(204) if self._pre_1_14 else call.respond(key.describe())

    # -- key management (§3) ----------------------------------------------------------------------------------------

    def list_keys(self, call: _Call) -> _Reply:
        if not self.keys:
            raise _VaultError(404, [])
        return call.respond({"keys": sorted(self.keys)})

    def read_key(self, call: _Call) -> _Reply:
        key = self.keys.get(call.name)
        if key is None:
            raise _VaultError(404, [])
        context = call.query.get("context", "")
        try:
            decoded = _b64decode(context)
        except _B64Error as error:
            raise _bad_request(str(error)) from None
        return call.respond(key.describe(decoded))

    def create_key(self, call: _Call) -> _Reply:
        fields = call.fields
        key_type = fields.string("type") or "aes256-gcm96"
        derived, convergent = fields.boolean("derived"), fields.boolean("convergent_encryption")
        period = fields.seconds("auto_rotate_period")
        _check_rotate_period(period)
        if convergent and not derived:
            raise _bad_request("convergent encryption requires derivation to be enabled")
        _check_creatable_type(key_type, _SUPPORTED_KEY_TYPES)
        if fields.integer("key_size"):
            raise _bad_request(f"key_size is not valid for algorithm {key_type}")
        key = self.keys.get(call.name)
        if key is not None:
            call.warnings.append(f"key {call.name} already existed")
            return self._key_reply(call, key)
        key = self.new_key(
            call.name,
            key_type,
            derived=derived,
            convergent=convergent,
            exportable=fields.boolean("exportable"),
            allow_plaintext_backup=fields.boolean("allow_plaintext_backup"),
            auto_rotate_period=period,
        )
        return self._key_reply(call, key)

    def delete_key(self, call: _Call) -> _Reply:
        key = self._require(call.name, f"error deleting policy {call.name}: could not delete key; not found")
        if not key.deletion_allowed:
            raise _bad_request(f"error deleting policy {call.name}: deletion is not allowed for this key")
        del self.keys[call.name]
        return _Reply(204)

    def configure_key(self, call: _Call) -> _Reply:
        key = self._require(call.name, f"no existing key named {call.name} could be found")
        # Work on a copy so that a rejected request changes nothing.
        updated = dataclasses.replace(key)
        changed = _apply_min_decryption(updated, call.fields, call.warnings)
        changed = _apply_min_encryption(updated, call.fields) or changed
        if 0 < updated.min_encryption_version < updated.min_decryption_version:
            raise _bad_request(
                "cannot set min encryption/decryption values; min encryption version of "
                f"{updated.min_encryption_version} must be greater than or equal to min decryption version of "
                f"{updated.min_decryption_version}"
            )
        changed = _apply_key_flags(updated, call.fields) or changed
        if changed:
            _check_min_available(updated)
            self.keys[call.name] = updated
        return self._key_reply(call, updated)

    def rotate_key(self, call: _Call) -> _Reply:
        key = self._require(call.name, "key not found")
        key.rotate(self._clock())
        return self._key_reply(call, key)

    def trim_key(self, call: _Call) -> _Reply:
        key = self._require(call.name, "invalid key name")
        if not call.fields.has("min_available_version"):
            raise _bad_request("missing min_available_version")
        minimum = call.fields.integer("min_available_version")
        _check_trim(key, minimum)
        for version in [version for version in key.versions if version < minimum]:
            del key.versions[version]
        key.min_available_version = minimum
        return self._key_reply(call, key)

    def read_keys_config(self, call: _Call) -> _Reply:
        return call.respond({"disable_upsert": self.disable_upsert})

    def write_keys_config(self, call: _Call) -> _Reply:
        if call.fields.has("disable_upsert"):
            self.disable_upsert = call.fields.boolean("disable_upsert")
        return call.respond({"disable_upsert": self.disable_upsert})

    # -- encrypt / decrypt / rewrap (§4-§6) -------------------------------------------------------------------------

    def encrypt(self, call: _Call) -> _Reply:
        items, batch = _request_items(call.fields, _ENCRYPT_ITEMS)
        if not batch and not call.fields.has("plaintext"):
            raise _bad_request("missing plaintext to encrypt")
        _check_context_consistency(items)
        key = self._key_for_encrypt(call, items)
        outcome = _run_items(items, lambda index, item: _encrypt_item(key, index, item), {})
        if not batch:
            return call.respond(_single_result(outcome, "ciphertext", "key_version"))
        return _batch_reply(call, outcome)

    def _key_for_encrypt(self, call: _Call, items: list[JSONObject]) -> _TransitKey:
        key = self.keys.get(call.name)
        if key is not None:
            return key
        # Only the create operation may upsert; ACLs have already demanded the create capability for it (§1.4).
        if call.operation != "create" or self.disable_upsert:
            raise _bad_request("encryption key not found")
        derived = bool(items[0].get("context"))
        convergent = call.fields.boolean("convergent_encryption")
        if convergent and not derived:
            raise _bad_request("convergent encryption requires derivation to be enabled, so context is required")
        key_type = call.fields.string("type") or "aes256-gcm96"
        if key_type.startswith("ecdsa-"):
            raise _bad_request(f"key type {key_type} not supported for this operation")
        _check_creatable_type(key_type, frozenset(_AEAD_KEY_BYTES))
        return self.new_key(call.name, key_type, derived=derived, convergent=convergent)

    def decrypt(self, call: _Call) -> _Reply:
        items, batch = _request_items(call.fields, _DECRYPT_ITEMS)
        if not batch and not items[0]["ciphertext"]:
            raise _bad_request("missing ciphertext to decrypt")
        _check_context_consistency(items)
        key = self._require(call.name, "encryption key not found")
        outcome = _run_items(items, lambda index, item: _decrypt_item(key, index, item), {"plaintext": ""})
        if not batch:
            return call.respond(_single_result(outcome, "plaintext"))
        return _batch_reply(call, outcome)

    def rewrap(self, call: _Call) -> _Reply:
        items, batch = _request_items(call.fields, _REWRAP_ITEMS)
        if not batch and not items[0]["ciphertext"]:
            raise _bad_request("missing ciphertext to decrypt")
        _check_context_consistency(items)
        key = self._require(call.name, "encryption key not found")
        outcome = _run_items(items, lambda _index, item: _rewrap_item(key, item), {})
        if not batch:
            return call.respond(_single_result(outcome, "ciphertext", "key_version"))
        # Rewrap never adopted the 400-on-failed-item rule: per-item errors ride on a 200 (§6).
        if outcome.internal_error:
            raise _internal(outcome.first_internal)
        return call.respond({"batch_results": outcome.results})

    def datakey(self, call: _Call) -> _Reply:
        kind = call.params["kind"]
        if kind not in ("plaintext", "wrapped"):
            raise _bad_request("Invalid path, must be 'plaintext' or 'wrapped'")
        try:
            context = _decode_item_b64(call.fields.string("context"))
            key = self._require(call.name, "encryption key not found")
            size = {128: 16, 256: 32, 512: 64}.get(call.fields.integer("bits", 256))
            if size is None:
                raise _bad_request("invalid bit length")
            material = secrets.token_bytes(size)
            ciphertext, version = key.encrypt(material, call.fields.integer("key_version"), context, None)
        except _ItemError as error:
            raise error.to_vault_error() from None
        data: JSONObject = {"ciphertext": ciphertext, "key_version": version}
        if kind == "plaintext":
            data["plaintext"] = _b64encode(material)
        return call.respond(data)

    # -- sign / verify (§8) -------------------------------------------------------------------------------------------

    def sign(self, call: _Call) -> _Reply:
        _check_hash_algorithm(call)
        key = self._require(call.name, "signing key not found")
        if not key.can_sign:
            raise _bad_request(f"key type {key.key_type} does not support signing")
        items, batch = _request_items(call.fields, _SIGN_ITEMS)
        version = call.fields.integer("key_version")
        failure: JSONObject = {"key_version": version} if version else {}
        outcome = _run_items(items, lambda _index, item: _sign_item(key, version, item), failure)
        if not batch:
            return call.respond(_single_result(outcome, "signature", "key_version"))
        return call.respond({"batch_results": outcome.results})

    def verify(self, call: _Call) -> _Reply:
        _check_hash_algorithm(call)
        key = self._require(call.name, "signature verification key not found")
        if call.fields.string("hmac"):
            raise _bad_request("hmac verification is not implemented by this test server")
        items, batch = _request_items(call.fields, _VERIFY_ITEMS)
        if not batch and not items[0]["signature"]:
            raise _bad_request("neither a 'signature' nor an 'hmac' were given to verify")
        outcome = _run_items(items, lambda _index, item: _verify_item(key, item), {"valid": False})
        if not batch:
            return call.respond(_single_result(outcome, "valid"))
        return call.respond({"batch_results": outcome.results})


def _check_creatable_type(key_type: str, allowed: frozenset[str]) -> None:
    if key_type in allowed:
        return
    if key_type in _UNEMULATED_KEY_TYPES:
        raise _bad_request(f"key type {key_type} is not implemented by this test server")
    raise _bad_request(f"unknown key type {key_type}")


def _check_hash_algorithm(call: _Call) -> None:
    fields = call.fields
    algorithm = call.params.get("algorithm") or fields.string("hash_algorithm") or fields.string("algorithm")
    if algorithm and algorithm not in _HASH_ALGORITHMS:
        raise _bad_request(f'invalid hash algorithm "{algorithm}"')


def _associated_data(key: _TransitKey, index: int, item: JSONObject) -> bytes | None:
    encoded = item.get("associated_data", "")
    if not encoded:
        return None
    if not key.is_aead:
        raise _ItemError(f"'[{index}].associated_data' provided for non-AEAD cipher suite {key.key_type}")
    try:
        return _b64decode(encoded)
    except _B64Error as error:
        # Vault decodes AAD inside the cipher factory, so a bad value surfaces as an internal error (§4.1).
        raise _ItemError(str(error), internal=True) from None


def _encrypt_item(key: _TransitKey, index: int, item: JSONObject) -> JSONObject:
    plaintext = _decode_item_b64(item.get("plaintext", ""))
    context = _decode_item_b64(item.get("context", ""))
    if item.get("nonce"):
        raise _ItemError("provided nonce not allowed for this key")
    aad = _associated_data(key, index, item)
    ciphertext, version = key.encrypt(plaintext, item.get("key_version", 0), context, aad)
    return {"ciphertext": ciphertext, "key_version": version}


def _decrypt_item(key: _TransitKey, index: int, item: JSONObject) -> JSONObject:
    ciphertext = item.get("ciphertext", "")
    if not ciphertext:
        raise _ItemError("missing ciphertext to decrypt")
    context = _decode_item_b64(item.get("context", ""))
    aad = _associated_data(key, index, item)
    return {"plaintext": _b64encode(key.decrypt(ciphertext, context, aad))}


def _rewrap_item(key: _TransitKey, item: JSONObject) -> JSONObject:
    ciphertext = item.get("ciphertext", "")
    if not ciphertext:
        raise _ItemError("missing ciphertext to decrypt")
    context = _decode_item_b64(item.get("context", ""))
    plaintext = key.decrypt(ciphertext, context, None)
    new_ciphertext, version = key.encrypt(plaintext, item.get("key_version", 0), context, None)
    return {"ciphertext": new_ciphertext, "key_version": version}


def _sign_item(key: _TransitKey, version: int, item: JSONObject) -> JSONObject:
    data = _decode_item_b64(item.get("input", ""), prefix="unable to decode input as base64: ")
    context = _decode_item_b64(item.get("context", ""))
    signature, used = key.sign(data, version, context)
    return {"signature": signature, "key_version": used}


def _verify_item(key: _TransitKey, item: JSONObject) -> JSONObject:
    data = _decode_item_b64(item.get("input", ""), prefix="unable to decode input as base64: ")
    signature = item.get("signature", "")
    if not signature:
        raise _ItemError("missing signature to verify")
    context = _decode_item_b64(item.get("context", ""))
    return {"valid": key.verify(data, signature, context)}


def _batch_reply(call: _Call, outcome: _BatchOutcome) -> _Reply:
    """Status rules shared by batch encrypt and decrypt (§4.4)."""
    data = {"batch_results": outcome.results}
    if not outcome.failed:
        return call.respond(data)
    status = 400 if outcome.user_error else 500
    override = call.fields.integer("partial_failure_response_code")
    if override and outcome.any_success:
        if 1 <= override <= 599:
            status = override
        else:
            call.warnings.append(
                f"partial_failure_response_code {override} is not a valid HTTP status code; using {status}"
            )
    # Vault sends this body raw, bypassing the code that fills in mount_type.
    return call.respond(data, status=status, mount_type="")


def _apply_min_decryption(key: _TransitKey, fields: _Fields, warnings: list[str]) -> bool:
    if not fields.has("min_decryption_version"):
        return False
    wanted = fields.integer("min_decryption_version")
    if wanted < 0:
        raise _bad_request("min decryption version cannot be negative")
    if wanted == 0:
        wanted = 1
        warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
    if wanted == key.min_decryption_version:
        return False
    if wanted > key.latest_version:
        raise _bad_request(f"cannot set min decryption version of {wanted}, latest key version is {key.latest_version}")
    key.min_decryption_version = wanted
    return True


def _apply_min_encryption(key: _TransitKey, fields: _Fields) -> bool:
    if not fields.has("min_encryption_version"):
        return False
    wanted = fields.integer("min_encryption_version")
    if wanted < 0:
        raise _bad_request("min encryption version cannot be negative")
    if wanted == key.min_encryption_version:
        return False
    if wanted > key.latest_version:
        raise _bad_request(f"cannot set min encryption version of {wanted}, latest key version is {key.latest_version}")
    key.min_encryption_version = wanted
    return True


def _key_flags(key: _TransitKey) -> tuple[bool, bool, bool, int]:
    return key.deletion_allowed, key.exportable, key.allow_plaintext_backup, key.auto_rotate_period


def _apply_key_flags(key: _TransitKey, fields: _Fields) -> bool:
    before = _key_flags(key)
    if fields.has("deletion_allowed"):
        key.deletion_allowed = fields.boolean("deletion_allowed")
    # exportable and allow_plaintext_backup are one-way switches: false is ignored.
    key.exportable = key.exportable or fields.boolean("exportable")
    key.allow_plaintext_backup = key.allow_plaintext_backup or fields.boolean("allow_plaintext_backup")
    if fields.has("auto_rotate_period"):
        period = fields.seconds("auto_rotate_period")
        _check_rotate_period(period)
        key.auto_rotate_period = period
    return _key_flags(key) != before


def _check_min_available(key: _TransitKey) -> None:
    # min_encryption_version == 0 ("use latest") still counts as below a trimmed minimum, as in Vault.
    if key.min_available_version > key.min_encryption_version:
        raise _bad_request("min encryption version should not be less than min available version")
    if key.min_available_version > key.min_decryption_version:
        raise _bad_request("min decryption version should not be less then min available version")


def _check_trim(key: _TransitKey, minimum: int) -> None:
    """Vault's trim preconditions, in its order (§3.6); the message typos are Vault's."""
    checks = (
        (minimum < key.min_available_version, "minimum available version cannot be decremented"),
        (
            key.min_encryption_version == 0,
            "minimum available version cannot be set when minimum encryption version is not set",
        ),
        (
            key.min_decryption_version == 0,
            "minimum available version cannot be set when minimum decryption version is not set",
        ),
        (
            minimum > key.min_encryption_version,
            "minimum available version cannot be greater than minmum encryption version",
        ),
        (
            minimum > key.min_decryption_version,
            "minimum available version cannot be greater than minimum decryption version",
        ),
        (minimum < 0, "minimum available version cannot be negative"),
        (minimum == 0, "minimum available version should be positive"),
    )
    for failed, message in checks:
        if failed:
            raise _bad_request(message)


# --------------------------------------------------------------------------------------------------------------------
# Tokens, policies and auth endpoints


def _glob_regex(glob: str) -> re.Pattern[str]:
    """Vault policy path: ``+`` matches one segment, a trailing ``*`` makes the rule a prefix match."""
    prefix = glob.endswith("*")
    body = glob[:-1] if prefix else glob
    regex = "/".join("[^/]+" if segment == "+" else re.escape(segment) for segment in body.split("/"))
    return re.compile(regex + (".*" if prefix else ""))


class _Policy:
    """A token's ACL. The most specific matching rule decides, so a narrow rule can deny what a glob allows."""

    def __init__(self, rules: Mapping[str, Iterable[str]]) -> None:
        self._rules: list[tuple[tuple[bool, int], re.Pattern[str], frozenset[str]]] = []
        for glob, capabilities in rules.items():
            caps = frozenset(capabilities)
            unknown = caps - _CAPABILITIES
            if unknown:
                raise ValueError(f"unknown capabilities for {glob!r}: {sorted(unknown)}")
            exact = "*" not in glob and "+" not in glob.split("/")
            literal = len(glob.replace("*", "").replace("+", ""))
            self._rules.append(((exact, literal), _glob_regex(glob), frozenset() if "deny" in caps else caps))
        self._rules.sort(key=lambda rule: rule[0], reverse=True)

    def allows(self, path: str, capability: str) -> bool:
        return capability in self.capabilities(path)

    def capabilities(self, path: str) -> frozenset[str]:
        for _, pattern, caps in self._rules:
            if pattern.fullmatch(path):
                return caps
        return frozenset()


# Vault's built-in "default" policy grants every token its own lookup and renewal, and asking what it may do.
_DEFAULT_POLICY = _Policy(
    {
        "auth/token/lookup-self": ["read", "update"],
        "auth/token/renew-self": ["update"],
        "sys/capabilities-self": ["update"],
    }
)


@dataclass
class _Token:
    token_id: str
    policy: _Policy | None  # None is the root policy: everything is allowed.
    policies: list[str]
    display_name: str
    path: str
    ttl: int
    issued: float
    expires: float | None
    renewable: bool
    meta: dict[str, str] | None = None
    accessor: str = field(default_factory=lambda: secrets.token_hex(12))

    def allows(self, path: str, capability: str) -> bool:
        if self.policy is None:
            return True
        return self.policy.allows(path, capability) or _DEFAULT_POLICY.allows(path, capability)

    def capabilities(self, path: str) -> list[str]:
        """As ``sys/capabilities-self`` reports them: ``["root"]`` for a root token, ``["deny"]`` for nothing."""
        if self.policy is None:
            return ["root"]
        granted = self.policy.capabilities(path) | _DEFAULT_POLICY.capabilities(path)
        return sorted(granted) or ["deny"]

    def remaining(self, now: float) -> int:
        return 0 if self.expires is None else max(0, math.ceil(self.expires - now))

    def auth_block(self, now: float) -> JSONObject:
        return {
            "client_token": self.token_id,
            "accessor": self.accessor,
            "policies": list(self.policies),
            "token_policies": list(self.policies),
            "metadata": self.meta,
            "lease_duration": self.remaining(now),
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }

    def lookup_data(self, now: float) -> JSONObject:
        return {
            "accessor": self.accessor,
            "creation_time": int(self.issued),
            "creation_ttl": self.ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": None if self.expires is None else _rfc3339(self.expires),
            "explicit_max_ttl": 0,
            "id": self.token_id,
            "issue_time": _rfc3339(self.issued),
            "meta": self.meta,
            "num_uses": 0,
            "orphan": True,
            "path": self.path,
            "policies": list(self.policies),
            "renewable": self.renewable,
            "ttl": self.remaining(now),
            "type": "service",
        }


@dataclass(frozen=True)
class _AppRole:
    role_name: str
    secret_id: str
    policy: Mapping[str, Iterable[str]]
    ttl: int


class _TokenStore:
    """Tokens, AppRoles and the auth/* endpoints."""

    def __init__(self, clock: Callable[[], float], root_token: str) -> None:
        self._clock = clock
        self.tokens: dict[str, _Token] = {}
        self.approles: dict[str, _AppRole] = {}
        self.tokens[root_token] = _Token(
            root_token, None, ["root"], "root", "auth/token/root", 0, clock(), None, renewable=False
        )
        self.routes = [
            _Route(
                _path("auth/approle/login"),
                {"update": self.approle_login},
                _fields("role_id", "secret_id"),
                unauthenticated=True,
                mount_type="approle",
            ),
            _Route(
                _path("auth/token/lookup-self"),
                {"read": self.lookup_self, "update": self.lookup_self},
                _fields("token"),
                mount_type="token",
            ),
            _Route(
                _path("auth/token/renew-self"), {"update": self.renew_self}, _fields("increment"), mount_type="token"
            ),
            _Route(
                _path("sys/capabilities-self"),
                {"update": self.capabilities_self},
                _fields("paths"),
                mount_type="system",
            ),
        ]

    def add(
        self,
        token_id: str,
        policy: Mapping[str, Iterable[str]],
        *,
        ttl: int = 0,
        display_name: str = "token",
        path: str = "auth/token/create",
        meta: dict[str, str] | None = None,
        policy_names: list[str] | None = None,
    ) -> _Token:
        now = self._clock()
        token = _Token(
            token_id,
            _Policy(policy),
            policy_names or ["default", "test"],
            display_name,
            path,
            ttl,
            now,
            now + ttl if ttl else None,
            renewable=bool(ttl),
            meta=meta,
        )
        self.tokens[token_id] = token
        return token

    def authenticate(self, token_id: str) -> _Token:
        if not token_id:
            raise _permission_denied()
        token = self.tokens.get(token_id)
        if token is not None and token.expires is not None and token.expires <= self._clock():
            del self.tokens[token_id]
            token = None
        if token is None:
            raise _VaultError(403, [_multierror("permission denied", "invalid token")])
        return token

    def approle_login(self, call: _Call) -> _Reply:
        role_id, secret_id = call.fields.string("role_id"), call.fields.string("secret_id")
        if not role_id:
            raise _bad_request("missing role_id")
        if not secret_id:
            raise _bad_request("missing secret_id")
        role = self.approles.get(role_id)
        if role is None or not hmac.compare_digest(role.secret_id, secret_id):
            raise _bad_request("invalid role or secret ID")
        token = self.add(
            "hvs." + secrets.token_urlsafe(18),
            role.policy,
            ttl=role.ttl or _DEFAULT_TOKEN_TTL,
            display_name=f"approle-{role.role_name}",
            path="auth/approle/login",
            meta={"role_name": role.role_name},
            policy_names=["default", role.role_name],
        )
        return call.respond(None, auth=token.auth_block(self._clock()))

    def lookup_self(self, call: _Call) -> _Reply:
        assert call.token is not None  # lookup-self is an authenticated route
        return call.respond(call.token.lookup_data(self._clock()))

    def capabilities_self(self, call: _Call) -> _Reply:
        """``paths`` as a list or a comma-separated string; each path answers with its capabilities. Like Vault, a
        single path is also answered under ``capabilities`` (kept for old clients), and the ``sys/`` answer repeats
        ``data`` at the top level of the envelope."""
        token = call.token
        assert token is not None
        raw = call.fields.raw.get("paths")
        paths = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else raw
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise _bad_request("paths must be supplied")
        data: JSONObject = {path.lstrip("/"): token.capabilities(path.lstrip("/")) for path in paths}
        if len(paths) == 1:
            data["capabilities"] = data[paths[0].lstrip("/")]
        reply = call.respond(data)
        assert reply.body is not None
        reply.body.update({key: value for key, value in data.items() if key not in reply.body})
        return reply

    def renew_self(self, call: _Call) -> _Reply:
        token = call.token
        assert token is not None
        if not token.renewable:
            raise _bad_request("lease is not renewable")
        increment = call.fields.seconds("increment") or token.ttl
        token.expires = self._clock() + min(increment, token.ttl)
        return call.respond(None, auth=token.auth_block(self._clock()))


# --------------------------------------------------------------------------------------------------------------------
# sys/* endpoints


@dataclass
class _NodeState:
    version: str
    sealed: bool = False
    standby: bool = False
    initialized: bool = True
    cluster_name: str = "vault-cluster-transit-test"
    cluster_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def effectively_sealed(self) -> bool:
        # An uninitialized node has no keys, so it is sealed too.
        return self.sealed or not self.initialized


_HEALTH_CODES = (
    ("activecode", 200),
    ("standbycode", 429),
    ("drsecondarycode", 472),
    ("performancestandbycode", 473),
    ("sealedcode", 503),
    ("uninitcode", 501),
)


def _query_code(query: Mapping[str, str], name: str, default: int) -> int:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _bad_request(f"bad code for '{name}' parameter: {query[name]!r} is not an integer") from None


def _query_flag(query: Mapping[str, str], name: str) -> bool:
    try:
        return _to_bool(query.get(name, ""))
    except ValueError:
        raise _bad_request(f"bad value for '{name}' parameter: {query[name]!r}") from None


class _SystemEndpoints:
    def __init__(self, node: _NodeState, clock: Callable[[], float]) -> None:
        self._node = node
        self._clock = clock
        self.routes = [
            _Route(
                _path("sys/health"), {"read": self.health}, unauthenticated=True, works_sealed=True, mount_type="system"
            ),
            _Route(
                _path("sys/seal-status"),
                {"read": self.seal_status},
                unauthenticated=True,
                works_sealed=True,
                mount_type="system",
            ),
            _Route(
                _path("sys/init"),
                {"read": self.init_status},
                unauthenticated=True,
                works_sealed=True,
                mount_type="system",
            ),
        ]

    def health(self, call: _Call) -> _Reply:
        return _Reply(self._health_status(call.query), self._health_body())

    def seal_status(self, call: _Call) -> _Reply:
        node = self._node
        body: JSONObject = {
            "type": "shamir",
            "initialized": node.initialized,
            "sealed": node.effectively_sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": node.version,
            "build_date": "2024-01-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
        }
        if not node.effectively_sealed:
            body.update(cluster_name=node.cluster_name, cluster_id=node.cluster_id)
        return _Reply(200, body)

    def init_status(self, call: _Call) -> _Reply:
        return _Reply(200, {"initialized": self._node.initialized})

    def _health_status(self, query: Mapping[str, str]) -> int:
        codes = {name: _query_code(query, name, default) for name, default in _HEALTH_CODES}
        standby_ok = _query_flag(query, "standbyok")
        node = self._node
        if not node.initialized:
            return codes["uninitcode"]
        if node.sealed:
            return codes["sealedcode"]
        if node.standby and not standby_ok:
            return codes["standbycode"]
        return codes["activecode"]

    def _health_body(self) -> JSONObject:
        node = self._node
        sealed = node.effectively_sealed
        body: JSONObject = {
            "initialized": node.initialized,
            "sealed": sealed,
            "standby": node.standby or sealed,  # the core calls itself standby until it unseals (§10)
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(self._clock()),
            "version": node.version,
            "enterprise": False,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        }
        if not sealed:
            body.update(cluster_name=node.cluster_name, cluster_id=node.cluster_id)
        return body


# --------------------------------------------------------------------------------------------------------------------
# Request processing shared by all server threads


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # URL path, percent-decoded, including the /v1/ prefix
    query: dict[str, str]
    token: str
    namespace: str
    body: bytes


@dataclass(frozen=True)
class _Match:
    route: _Route | None
    params: dict[str, str]
    api_path: str  # path without /v1/, as ACL policies see it
    miss: _VaultError


_METHOD_OPERATIONS = {"LIST": "list", "POST": "update", "PUT": "update", "DELETE": "delete", "HEAD": "read"}


def _operation(method: str, query: Mapping[str, str]) -> str | None:
    if method == "GET":
        return "list" if query.get("list", "") in _TRUE_STRINGS else "read"
    return _METHOD_OPERATIONS.get(method)


def _find_route(routes: Iterable[_Route], path: str) -> tuple[_Route, dict[str, str]] | None:
    for route in routes:
        found = route.pattern.fullmatch(path)
        if found:
            return route, {key: value for key, value in found.groupdict().items() if value is not None}
    return None


class _Vault:
    """State and request pipeline: sealing, fault injection, authentication, ACLs and dispatch to handlers."""

    def __init__(self, *, root_token: str, pre_1_14: bool, mount_point: str) -> None:
        self.lock = threading.RLock()
        self.clock_offset = 0.0
        self.mount_point = mount_point.strip("/")
        self.node = _NodeState(version="1.13.2" if pre_1_14 else "1.17.2")
        self.transit = _TransitEngine(self.now, pre_1_14=pre_1_14)
        self.tokens = _TokenStore(self.now, root_token)
        self.system = _SystemEndpoints(self.node, self.now)
        self.latency = 0.0
        self.failures_left = 0
        self.failure_status = 500
        self.request_count = 0
        self.calls: Counter[str] = Counter()

    def now(self) -> float:
        return time.time() + self.clock_offset

    def handle(self, request: _Request) -> _Reply:
        match = self._resolve(request.path)
        operation = _operation(request.method, request.query)
        with self.lock:
            self.request_count += 1
            self.calls[match.route.handler_name(operation) if match.route else "unsupported"] += 1
            latency = self.latency
        if latency > 0:
            time.sleep(latency)  # outside the lock, so slow requests overlap as they would against Vault
        with self.lock:
            try:
                self._inject_failure()
                return self._dispatch(request, match, operation)
            except _VaultError as error:
                return _Reply(error.status, {"errors": error.errors})
            except Exception as error:  # noqa: BLE001 - a bug here must reach the test as a 500, not a dropped socket
                return _Reply(500, {"errors": [_multierror(f"transit test server bug: {error!r}")]})

    def _resolve(self, raw_path: str) -> _Match:
        if not raw_path.startswith("/v1/"):
            return _Match(None, {}, raw_path, _VaultError(404, []))
        path = raw_path[len("/v1/") :]
        no_handler = _VaultError(404, [f'no handler for route "{path}". route entry not found.'])
        mount = self.mount_point
        if path == mount or path.startswith(mount + "/"):
            found = _find_route(self.transit.routes, path[len(mount) + 1 :])
            no_handler = _VaultError(404, [_multierror("unsupported path")])
        else:
            found = _find_route([*self.system.routes, *self.tokens.routes], path)
        if found is None:
            return _Match(None, {}, path, no_handler)
        return _Match(found[0], found[1], path, no_handler)

    def _inject_failure(self) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise _VaultError(self.failure_status, [_multierror("injected failure (transit test server)")])

    def _dispatch(self, request: _Request, match: _Match, operation: str | None) -> _Reply:
        route = match.route
        if self.node.effectively_sealed and not (route and route.works_sealed):
            raise _VaultError(503, ["Vault is sealed"])
        if request.namespace:
            raise _VaultError(403, [_multierror("namespaces feature not enabled")])
        if operation is None:
            raise _VaultError(405, [_multierror("unsupported operation")])
        body = _parse_json_body(request.body) if operation == "update" else {}
        if route and route.exists and operation == "update" and not route.exists(match.params):
            operation = "create"
        token = None
        if route is None or not route.unauthenticated:
            token = self.tokens.authenticate(request.token)
            self._authorize(token, match.api_path, operation)
        if route is None:
            raise match.miss
        handler = route.operations.get(operation)
        if handler is None:
            raise _VaultError(405, [_multierror("unsupported operation")])
        call = _Call(
            operation,
            match.params,
            _Fields(body),
            request.query,
            token,
            route.mount_type,
            _unknown_field_warnings(route, body, match.params),
        )
        return handler(call)

    @staticmethod
    def _authorize(token: _Token, path: str, operation: str) -> None:
        # Vault appends "/" to list requests, so "transit/keys/*" (not "transit/keys") grants LIST transit/keys.
        acl_path = path + "/" if operation == "list" and not path.endswith("/") else path
        if not token.allows(acl_path, operation):
            raise _permission_denied()


def _unknown_field_warnings(route: _Route, body: JSONObject, params: Mapping[str, str]) -> list[str]:
    unknown = sorted(set(body) - route.fields - set(params))
    if not unknown:
        return []
    return [f"Endpoint ignored these unrecognized parameters: [{' '.join(unknown)}]"]


# --------------------------------------------------------------------------------------------------------------------
# HTTP layer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Python's default backlog of 5 makes concurrent clients retry their connection after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], vault: _Vault) -> None:
        super().__init__(address, _RequestHandler)
        self.vault = vault

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out (see set_latency) hang up before the answer; that is expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _request_token(vault_token: str, authorization: str) -> str:
    if not vault_token and authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :]
    return vault_token


class _RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes every connection after one answer, so taking the listener down really cuts clients off
    # instead of leaving keep-alive connections being served by old handler threads.
    protocol_version = "HTTP/1.0"
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_LIST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        # Silence per-request stderr logging; pytest output stays readable.
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self._write(_Reply(413, {"errors": ["http: request body too large"]}))
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        token = _request_token(self.headers.get("X-Vault-Token", ""), self.headers.get("Authorization", ""))
        request = _Request(
            method=self.command,
            path=unquote(url.path),
            query=query,
            token=token,
            namespace=self.headers.get("X-Vault-Namespace", ""),
            body=body,
        )
        self._write(self.server.vault.handle(request))

    def _write(self, reply: _Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Cache-Control", "no-store")
        if reply.status != 204:
            # Exactly this value: hvac only parses error bodies when the header equals "application/json" (§2.1).
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)


# --------------------------------------------------------------------------------------------------------------------
# Public API


class TransitServer:
    """A Vault Transit test server on 127.0.0.1 with an ephemeral port, served from a daemon thread.

    Use as a context manager or call ``start()``/``stop()``. Every control and inspection method is thread-safe.
    """

    def __init__(self, *, root_token: str = "root-token", pre_1_14: bool = False, mount_point: str = "transit") -> None:
        self._root_token = root_token
        self._vault = _Vault(root_token=root_token, pre_1_14=pre_1_14, mount_point=mount_point)
        self._lifecycle = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind 127.0.0.1 (an ephemeral port the first time) and serve in a daemon thread."""
        with self._lifecycle:
            self._running = True
            self._open_listener()

    def stop(self) -> None:
        with self._lifecycle:
            self._running = False
            self._close_listener()

    def __enter__(self) -> TransitServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("TransitServer has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_token(self) -> str:
        return self._root_token

    @property
    def mount_point(self) -> str:
        return self._vault.mount_point

    def _open_listener(self) -> None:
        if self._httpd is not None:
            return
        # Reopening reuses the first port so clients configured with ``url`` reconnect after set_down(False).
        httpd = _HTTPServer(("127.0.0.1", self._port), self._vault)
        self._port = httpd.server_address[1]
        # A short poll interval keeps shutdown() (and therefore every test teardown) quick.
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"transit-server-{self._port}",
            daemon=True,
        )
        thread.start()
        self._httpd, self._thread = httpd, thread

    def _close_listener(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join()

    # -- fault injection ----------------------------------------------------------------------------------------------

    def seal(self) -> None:
        """Answer 503 "Vault is sealed" everywhere except sys/health, sys/seal-status and sys/init."""
        with self._vault.lock:
            self._vault.node.sealed = True

    def unseal(self) -> None:
        with self._vault.lock:
            self._vault.node.sealed = False

    @property
    def sealed(self) -> bool:
        with self._vault.lock:
            return self._vault.node.sealed

    def set_standby(self, standby: bool) -> None:
        """Make sys/health report an unsealed standby (429 by default); other endpoints keep answering."""
        with self._vault.lock:
            self._vault.node.standby = standby

    def set_initialized(self, initialized: bool) -> None:
        """An uninitialized node reports 501 from sys/health and behaves as sealed elsewhere."""
        with self._vault.lock:
            self._vault.node.initialized = initialized

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before answering every request."""
        with self._vault.lock:
            self._vault.latency = max(0.0, seconds)

    def set_down(self, down: bool) -> None:
        """Close the listening socket (clients get connection refused) or reopen it on the same port."""
        with self._lifecycle:
            if not self._running:
                raise RuntimeError("TransitServer is not started")
            if down:
                self._close_listener()
            else:
                self._open_listener()

    def pause(self) -> None:
        self.set_down(True)

    def resume(self) -> None:
        self.set_down(False)

    @property
    def is_down(self) -> bool:
        return self._running and self._httpd is None

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests (of any kind) with ``status`` and a Vault error envelope."""
        with self._vault.lock:
            self._vault.failures_left = n
            self._vault.failure_status = status

    def advance_time(self, seconds: float) -> None:
        """Move the server clock forward, e.g. to expire tokens; key creation times use the same clock."""
        with self._vault.lock:
            self._vault.clock_offset += seconds

    # -- counters -----------------------------------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._vault.lock:
            return self._vault.request_count

    @property
    def calls(self) -> Counter[str]:
        """A snapshot of requests per handler name (missing names read as 0)."""
        with self._vault.lock:
            return Counter(self._vault.calls)

    def reset_counters(self) -> None:
        with self._vault.lock:
            self._vault.request_count = 0
            self._vault.calls.clear()

    # -- tokens -------------------------------------------------------------------------------------------------------

    def add_token(self, token: str, policy: Mapping[str, Iterable[str]], *, ttl: int = 0) -> None:
        """Register a token whose ACL maps path globs ("transit/encrypt/*") to capabilities; ttl 0 never expires."""
        with self._vault.lock:
            self._vault.tokens.add(token, policy, ttl=ttl)

    def revoke_token(self, token: str) -> None:
        with self._vault.lock:
            self._vault.tokens.tokens.pop(token, None)

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        policy: Mapping[str, Iterable[str]],
        ttl: int = 3600,
        *,
        role_name: str = "piivault",
    ) -> None:
        """Let ``auth/approle/login`` issue tokens with ``policy`` that live for ``ttl`` seconds."""
        _Policy(policy)  # fail now, not at login, on an invalid capability
        with self._vault.lock:
            self._vault.tokens.approles[role_id] = _AppRole(role_name, secret_id, dict(policy), ttl)

    # -- key state ----------------------------------------------------------------------------------------------------

    def create_key(self, name: str, key_type: str = "aes256-gcm96", *, derived: bool = False) -> None:
        """Create a key directly, bypassing HTTP and ACLs (test setup)."""
        if key_type not in _SUPPORTED_KEY_TYPES:
            raise ValueError(f"unsupported key type {key_type}")
        with self._vault.lock:
            if name not in self._vault.transit.keys:
                self._vault.transit.new_key(name, key_type, derived=derived)

    def rotate_key(self, name: str) -> int:
        """Rotate a key directly and return its new latest version."""
        with self._vault.lock:
            key = self._key(name)
            key.rotate(self._vault.now())
            return key.latest_version

    def key_names(self) -> list[str]:
        with self._vault.lock:
            return sorted(self._vault.transit.keys)

    def has_key(self, name: str) -> bool:
        with self._vault.lock:
            return name in self._vault.transit.keys

    def key_versions(self, name: str) -> dict[int, int]:
        """Version -> creation time (Unix seconds) for every version still held, archived ones included."""
        with self._vault.lock:
            return {version: int(entry.created) for version, entry in sorted(self._key(name).versions.items())}

    def key_info(self, name: str) -> JSONObject:
        """What ``GET transit/keys/<name>`` would return as ``data``."""
        with self._vault.lock:
            return self._key(name).describe()

    def _key(self, name: str) -> _TransitKey:
        key = self._vault.transit.keys.get(name)
        if key is None:
            raise KeyError(name)
        return key
