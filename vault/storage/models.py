"""SQLAlchemy 2 typed mappings. Personal data only ever appears here as ciphertext (``*_ct``) or keyed digests.

Alembic migrations in ``migrations/`` create exactly this schema; ``alembic check`` in the tests keeps them in step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values; we store them as UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[dt.datetime | None], object] | None:
        """On SQLite, ``process_bind_param`` and SQLAlchemy's DATETIME text in one step: the chain of the two was a
        twentieth of an imported purchase row's cost. The text is SQLAlchemy's SQLite storage format, which its
        result processor parses and by which stored times compare (tests/unit/test_storage_types.py)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: dt.datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            utc = value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)
            return (
                f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
                f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
            )

        return process


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CustomerRow(Base):
    """One customer: the wrapped DEK and one ciphertext per personal field (NULL when the field is empty)."""

    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    wrapped_dek: Mapped[str] = mapped_column(Text)
    kek_version: Mapped[int] = mapped_column(Integer, index=True)
    dek_version: Mapped[int] = mapped_column(Integer)
    name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    mobile_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    national_id_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    birth_date_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    gender_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    address_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    member_id_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    attributes_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    external_refs_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # Set by the DPO: a restricted customer is stored but not processed (reads refused); a legal hold blocks erasure.
    restricted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    legal_hold: Mapped[bool] = mapped_column(Boolean, server_default=false())


class BlindIndexRow(Base):
    """Keyed HMAC of one canonical identifier. The primary key makes identifiers unique among live customers."""

    __tablename__ = "blind_indexes"
    # SQLite: store rows in the primary-key B-tree itself; a rowid table would write two B-trees per insert.
    __table_args__ = ({"sqlite_with_rowid": False},)

    # digest leads the key: lookups are by digest (HMAC domain separation already makes digests differ per kind).
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customers.customer_id", ondelete="CASCADE"), index=True
    )


class IdempotencyRow(Base):
    """A CreateCustomer request_id (keyed digest of principal + id) and a keyed fingerprint of its canonical body."""

    __tablename__ = "idempotency_keys"
    __table_args__ = ({"sqlite_with_rowid": False},)

    key_digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    request_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    customer_id: Mapped[str] = mapped_column(String(36), index=True)
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ApiTokenRow(Base):
    """An API token, stored only as a digest. ``token_id`` is a public handle for listing and revoking."""

    __tablename__ = "api_tokens"

    token_digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    principal: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoke_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ServiceKeyRow(Base):
    """A service key (blind-index key, request MAC key, ...) wrapped by the KEK."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped_key: Mapped[str] = mapped_column(Text)
    kek_version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ErasureRow(Base):
    """A crypto-shredded customer: a keyed digest of the id (never the id) and when. Mirrors the ledger file."""

    __tablename__ = "erasure_ledger"
    __table_args__ = ({"sqlite_with_rowid": False},)

    subject_digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    erase_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AuditEventRow(Base):
    """One audit event. ``mac`` chains it to the previous event; personal data never appears (ids and field names)."""

    __tablename__ = "audit_events"

    # On SQLite, INTEGER PRIMARY KEY makes seq the rowid: events are stored in sequence order, and verification reads
    # them as one sequential scan (a BIGINT key is a separate index, which measured three times slower to walk).
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    time_us: Mapped[int] = mapped_column(BigInteger, index=True)
    principal: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(96), index=True)
    customer_ids: Mapped[str] = mapped_column(Text)
    fields: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    peer: Mapped[str] = mapped_column(String(96))
    mac: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditSubjectRow(Base):
    """Which events concern which customer: the index behind "who accessed this customer's data"."""

    __tablename__ = "audit_subjects"
    __table_args__ = ({"sqlite_with_rowid": False},)

    customer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class AuditHeadRow(Base):
    """The chain head (one row): the last sequence number and MAC. Locked by every append, which orders the chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpointRow(Base):
    """A signed statement "the chain had this head at this time" (Ed25519 over the canonical checkpoint)."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    time_us: Mapped[int] = mapped_column(BigInteger)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class ConsentRecordRow(Base):
    """One grant or withdrawal, append-only (never updated). ``revision`` numbers a customer's records gap-free.

    No foreign key to ``customers``: the ledger outlives an erasure as proof of what was agreed, and what could still
    say who it was about (the evidence reference) is encrypted under the customer's data key, so it is shredded too."""

    __tablename__ = "consent_records"
    __table_args__ = ({"sqlite_with_rowid": False},)

    customer_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    record_id: Mapped[str] = mapped_column(String(36), unique=True)
    purpose: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    given_by: Mapped[str] = mapped_column(String(16))
    notice_version: Mapped[str] = mapped_column(String(64))
    notice_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    channel: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(32))
    evidence_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    record_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    request_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    request_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))


class DsarRequestRow(Base):
    """A data-subject request. No foreign key: the request and its outcome outlive the customer's erasure, as proof
    that it was answered (and when); the rejection text is encrypted under the customer's data key."""

    __tablename__ = "dsar_requests"

    request_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(36), index=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    opened_by: Mapped[str] = mapped_column(String(64))
    open_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    due_date: Mapped[str] = mapped_column(String(10), index=True)  # ISO date, inclusive
    verified_by: Mapped[str | None] = mapped_column(String(64))
    verify_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(64))
    close_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    rejection_reason: Mapped[str | None] = mapped_column(String(32))
    rejection_text_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    receipt_id: Mapped[str | None] = mapped_column(String(24))


class ConsentStateRow(Base):
    """The current state per customer, purpose and scope: the latest record, kept in the same transaction.

    Reads consult this row (one primary-key lookup) instead of replaying the ledger."""

    __tablename__ = "consent_state"
    __table_args__ = ({"sqlite_with_rowid": False},)

    customer_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customers.customer_id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    given_by: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(Integer)
    update_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ClientCertificateRow(Base):
    """A client certificate registered for mTLS, stored only as a keyed fingerprint of its DER encoding — never the
    certificate or its subject. ``cert_id`` is a public handle for listing and revoking; ``not_after`` is copied from
    the certificate so that the entry cannot outlive it."""

    __tablename__ = "client_certificates"

    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    cert_id: Mapped[str] = mapped_column(String(32), unique=True)
    principal: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoke_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PseudonymRow(Base):
    """A random pseudonym of a customer in an analytics domain. Every pseudonym ever issued is kept (purchases stay
    filed under it); the mapping is deleted with the customer, which unlinks every purchase for good."""

    __tablename__ = "pseudonyms"

    pseudonym: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customers.customer_id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ActivePseudonymRow(Base):
    """The pseudonym new purchases of a customer are filed under. Retired (row deleted, tombstone written) when the
    customer withdraws analytics consent, so no later row can carry the old one."""

    __tablename__ = "active_pseudonyms"
    __table_args__ = ({"sqlite_with_rowid": False},)

    customer_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("customers.customer_id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(32), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(32), unique=True)


class PurchaseRow(Base):
    """One purchase, filed under a pseudonym — never next to personal data. ``seq`` orders the analytics feed."""

    __tablename__ = "purchases"
    __table_args__ = (UniqueConstraint("source", "order_id"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    purchase_id: Mapped[str] = mapped_column(String(36), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(128))
    pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    store_id: Mapped[str] = mapped_column(String(64))
    purchase_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    items: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[str] = mapped_column(String(32))
    coupon: Mapped[str] = mapped_column(String(64))
    lines: Mapped[str] = mapped_column(Text)
    return_of_order_id: Mapped[str] = mapped_column(String(128))
    record_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))


class TombstoneRow(Base):
    """A pseudonym the analytics side must forget: the customer was erased or withdrew analytics consent."""

    __tablename__ = "analytics_tombstones"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    pseudonym: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(32))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
