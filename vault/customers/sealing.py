"""How a customer's personal fields are sealed into their row and opened again.

Each field is its own AES-256-GCM ciphertext under the customer's data key, with associated data naming the table,
the customer and the field (``FieldContext``): a ciphertext copied into another row or another column does not open.
An empty field is stored as NULL rather than as the ciphertext of nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vault.crypto import CryptoError, FieldCipher, SecretKey
from vault.customers.models import (
    PERSONAL_FIELDS,
    Customer,
    ExternalRef,
    Gender,
    Profile,
    decode_field,
    encode_field,
    is_empty,
)
from vault.errors import IntegrityError

TABLE = "customers"
DEK_VERSION = 1


def column(field: str) -> str:
    """The ciphertext column of a personal field."""
    return f"{field}_ct"


_COLUMNS = {name: column(name) for name in PERSONAL_FIELDS}


def seal(dek: SecretKey, customer_id: str, profile: Profile, names: Sequence[str]) -> dict[str, bytes | None]:
    """Ciphertext column values of the fields ``names`` (None for empty fields)."""
    cipher = FieldCipher(dek, DEK_VERSION).record(TABLE, customer_id)
    values: dict[str, bytes | None] = {}
    for name in names:
        value = getattr(profile, name)
        values[_COLUMNS[name]] = None if is_empty(value) else cipher.encrypt(encode_field(name, value), name)
    return values


def open_row(row: Any, dek: SecretKey) -> Customer:
    """The customer a stored row holds; ``IntegrityError`` (never the plaintext of a part) if any field fails to
    authenticate — tampered, or moved from another row or column."""
    cipher = FieldCipher(dek, row.dek_version).record(TABLE, row.customer_id)
    fields: dict[str, object] = {}
    try:
        for name in PERSONAL_FIELDS:
            token = getattr(row, _COLUMNS[name])
            if token is not None:
                fields[name] = decode_field(name, cipher.decrypt(token, name))
    except CryptoError:
        raise IntegrityError() from None
    return Customer(row.customer_id, row.version, Profile(**fields), row.create_time, row.update_time)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class DecoyRow:
    customer_id: str
    version: int
    dek_version: int
    create_time: dt.datetime
    update_time: dt.datetime
    columns: dict[str, bytes]

    def __getattr__(self, name: str) -> bytes:
        return self.columns[name]


@dataclass(frozen=True, slots=True)
class Decoy:
    """A customer that exists only in memory (random id and key, placeholder values in every field): what a lookup
    that finds nobody decrypts, so that it costs what a hit costs."""

    row: DecoyRow
    dek: SecretKey

    @classmethod
    def make(cls, now: dt.datetime) -> Decoy:
        customer_id = str(uuid.uuid4())
        dek = SecretKey.generate()
        placeholder = Profile(
            name="x" * 3,
            mobile="+8613800000000",
            email="decoy@invalid.example",
            national_id="0" * 18,
            birth_date="2000-01-01",
            gender=Gender.OTHER,
            address="x" * 24,
            member_id="decoy",
            attributes={"decoy": "x"},
            external_refs=(ExternalRef("decoy", "x"),),
        )
        sealed = seal(dek, customer_id, placeholder, PERSONAL_FIELDS)
        columns = {name: value for name, value in sealed.items() if value is not None}
        return cls(DecoyRow(customer_id, 1, DEK_VERSION, now, now, columns), dek)
