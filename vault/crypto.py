"""The crypto recipes: the only module that touches AEAD and HMAC primitives.

Field ciphertext layout (``FieldCipher``)::

    version (1 byte, 0x01) | key ref (4 bytes, big-endian DEK version) | nonce (12 bytes, random) | ciphertext+tag

AES-256-GCM with a random 96-bit nonce. The associated data binds the ciphertext to its place — table, record id and
field name — and to its own header, so a ciphertext copied to another row or field, or with a forged key ref, fails to
decrypt. Random nonces are safe here: one DEK encrypts a handful of fields per update, far below the 2^32 messages at
which GCM nonce collisions become a concern.

Blind indexes are HMAC-SHA256 over ``kind || 0x00 || canonical value`` with a key that never touches the database in
plaintext. An unkeyed hash of an 11-digit phone number falls to brute force in minutes; a keyed one does not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_BYTES = 32
NONCE_BYTES = 12
FIELD_FORMAT_V1 = 0x01
_HEADER = struct.Struct(">BI")
_AAD_PREFIX = b"piivault/field/v1"


class CryptoError(Exception):
    """The one failure type of the recipes: wrong key, wrong place, truncated or tampered input."""

    def __init__(self) -> None:
        super().__init__("ciphertext failed authentication")


class SecretKey:
    """Key bytes that never print. ``repr``/``str`` show ``[secure]``."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ValueError("key must be 32 bytes")
        self._material = bytes(material)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(KEY_BYTES))

    def reveal(self) -> bytes:
        """The raw bytes, for wrapping by a key provider. Never log the result."""
        return self._material

    def __repr__(self) -> str:
        return "SecretKey([secure])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._material).digest())


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives. It becomes the associated data, so moving the ciphertext breaks it."""

    table: str
    record_id: str
    field: str

    def associated_data(self, header: bytes) -> bytes:
        return _record_prefix(self.table, self.record_id) + self.field.encode() + b"\x00" + header


def _record_prefix(table: str, record_id: str) -> bytes:
    """The associated data's part common to every field of one record."""
    return b"\x00".join((_AAD_PREFIX, table.encode(), record_id.encode(), b""))


class FieldCipher:
    """AES-256-GCM field encryption under one data key (a customer's DEK)."""

    __slots__ = ("_aead", "_header")

    def __init__(self, key: SecretKey, key_ref: int) -> None:
        self._aead = AESGCM(key.reveal())
        self._header = _HEADER.pack(FIELD_FORMAT_V1, key_ref)

    def __repr__(self) -> str:
        return "FieldCipher([secure])"

    def encrypt(self, plaintext: bytes, context: FieldContext) -> bytes:
        return self._seal(plaintext, context.associated_data(self._header))

    def decrypt(self, token: bytes, context: FieldContext) -> bytes:
        return self._open(token, context.associated_data(self._header))

    def record(self, table: str, record_id: str) -> RecordCipher:
        """This cipher for the fields of one record: the same ciphertexts as ``encrypt``/``decrypt`` with a
        ``FieldContext(table, record_id, field)``, the associated data's common part built once (a customer's ten
        fields are sealed and opened together on every create and read)."""
        return RecordCipher(self, _record_prefix(table, record_id))

    def _seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def _open(self, token: bytes, associated_data: bytes) -> bytes:
        # The header must be this cipher's own (format and key ref). It is authenticated as part of the associated
        # data too, so comparing it in the clear is only an early refusal.
        token = bytes(token)  # a driver may hand a memoryview; bytes stay the same object
        start = _HEADER.size + NONCE_BYTES
        if len(token) < start + 16 or token[: _HEADER.size] != self._header:
            raise CryptoError()
        try:
            return self._aead.decrypt(token[_HEADER.size : start], token[start:], associated_data)
        except InvalidTag:
            raise CryptoError() from None


class RecordCipher:
    """``FieldCipher`` bound to one record (see ``FieldCipher.record``)."""

    __slots__ = ("_cipher", "_prefix", "_tail")

    def __init__(self, cipher: FieldCipher, prefix: bytes) -> None:
        self._cipher = cipher
        self._prefix = prefix
        self._tail = b"\x00" + cipher._header

    def __repr__(self) -> str:
        return "RecordCipher([secure])"

    def encrypt(self, plaintext: bytes, field: str) -> bytes:
        return self._cipher._seal(plaintext, self._prefix + field.encode() + self._tail)

    def decrypt(self, token: bytes, field: str) -> bytes:
        return self._cipher._open(token, self._prefix + field.encode() + self._tail)


def key_ref_of(token: bytes) -> int:
    """The DEK version a field ciphertext was written under (read from the authenticated header)."""
    if len(token) < _HEADER.size or token[0] != FIELD_FORMAT_V1:
        raise CryptoError()
    return int(_HEADER.unpack_from(token)[1])


class KeyWrapCipher:
    """AES-256-GCM wrapping of key material by a local key-encryption key (the embedded keyring)."""

    __slots__ = ("_aead",)

    def __init__(self, kek: SecretKey) -> None:
        self._aead = AESGCM(kek.reveal())

    def __repr__(self) -> str:
        return "KeyWrapCipher([secure])"

    def wrap(self, key: SecretKey, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key.reveal(), associated_data)

    def unwrap(self, wrapped: bytes, associated_data: bytes) -> SecretKey:
        if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16:
            raise CryptoError()
        try:
            return SecretKey(self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], associated_data))
        except InvalidTag:
            raise CryptoError() from None


class Mac:
    """HMAC-SHA256 under one service key: blind indexes, idempotency fingerprints. Keyed once and copied per digest,
    as ``ChainMac`` is: keying HMAC anew was half the cost of every digest (several per created or imported row)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: SecretKey) -> None:
        self._keyed = hmac.new(key.reveal(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Mac([secure])"

    def digest(self, domain: str, value: bytes) -> bytes:
        step = self._keyed.copy()
        step.update(domain.encode() + b"\x00" + value)
        return step.digest()


def file_digest(data: bytes) -> str:
    """SHA-256 of a file, as lower-case hex: what an export manifest lists, so anyone can check it with sha256sum."""
    return hashlib.sha256(data).hexdigest()


def token_digest(token: str) -> bytes:
    """Digest under which an API token is stored. Tokens carry 256 random bits, so an unkeyed hash is enough."""
    return hashlib.sha256(b"piivault/token/v1\x00" + token.encode()).digest()


class ChainMac:
    """HMAC-SHA256 hash chain: ``mac_i = HMAC(k, mac_{i-1} || record_i)``; keyed once, copied per link (fast)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: SecretKey) -> None:
        self._keyed = hmac.new(key.reveal(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "ChainMac([secure])"

    def link(self, previous: bytes, record: bytes) -> bytes:
        step = self._keyed.copy()
        step.update(previous)
        step.update(record)
        return step.digest()


class Signer:
    """Ed25519 signatures (audit checkpoints). The private key is derived from a 32-byte service key."""

    __slots__ = ("_private",)

    def __init__(self, seed: SecretKey) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed.reveal())

    def __repr__(self) -> str:
        return "Signer([secure])"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid Ed25519 signature; any malformed input is simply not valid."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
