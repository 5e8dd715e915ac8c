"""The consent ledger: record grants and withdrawals with their proof, and report the current state and history.

Records are appended, never changed; the current state per (customer, purpose, scope) is kept in the same
transaction, so a withdrawal takes effect on the very next read on every replica. Every change and every read of a
customer's consents is audited. The evidence reference (a receipt number, a form id) is encrypted under the customer's
data key, so it is shredded with the customer.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import OperationalError

from audit.events import AuditDraft, Caller
from audit.log import AuditLog
from consent import repository as repo
from consent.decisions import is_minor
from consent.models import (
    Channel,
    ConsentAction,
    ConsentRecord,
    ConsentRequest,
    ConsentScope,
    ConsentState,
    ConsentStatus,
    GivenBy,
)
from consent.purposes import Purpose, PurposeRegistry
from vault import cursors
from vault.crypto import CryptoError, FieldCipher, FieldContext, Mac, SecretKey
from vault.customers.models import Customer
from vault.customers.service import CustomerService
from vault.errors import (
    GuardianRequired,
    IdempotencyConflict,
    IntegrityError,
    InvalidArgument,
    ProcessingRestricted,
    Unavailable,
)
from vault.idempotency import request_key as request_key_of
from vault.purchases import repository as purchases_repo
from vault.purchases.models import ANALYTICS
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter

TABLE = "consent_records"
CIPHER_VERSION = 1
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_EVIDENCE_READERS = frozenset({"service", "support", "dpo"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PAGE_PREFIX = "h1:"


@dataclass(frozen=True, slots=True)
class HistoryPage:
    records: list[ConsentRecord]
    next_page_token: str


class ConsentService:
    def __init__(
        self,
        database: Database,
        writer: GroupCommitter,
        audit: AuditLog,
        customers: CustomerService,
        registry: PurposeRegistry,
        request_mac: Mac,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._database = database
        self._writer = writer
        self._audit = audit
        self._customers = customers
        self._registry = registry
        self._request_mac = request_mac
        self._clock = clock

    # -- changes --------------------------------------------------------------------------------------------------

    def grant(self, caller: Caller, customer_id: str, request: ConsentRequest, request_id: str = "") -> ConsentRecord:
        purpose = self._purpose(request.purpose)
        if request.scope is ConsentScope.STANDARD and not purpose.requires_consent:
            raise InvalidArgument.single(
                "scope",
                "the purpose's legal basis is not consent; only a separate consent for its sensitive fields "
                "(SCOPE_SENSITIVE) can be recorded",
            )
        if request.scope is ConsentScope.SENSITIVE and not purpose.needs_separate_consent:
            raise InvalidArgument.single("scope", "the purpose shows no sensitive field that needs a separate consent")
        _check_notice(request)
        _check_evidence(request.evidence_ref)
        customer, dek = self._subject(caller, customer_id)
        if request.given_by is GivenBy.SUBJECT and is_minor(customer.profile, self._clock().date()):
            raise GuardianRequired((customer_id,))
        return self._append(caller, customer_id, dek, ConsentAction.GRANT, [request], request_id)[0]

    def withdraw(
        self, caller: Caller, customer_id: str, request: ConsentRequest, request_id: str = "", *, all_scopes: bool
    ) -> list[ConsentRecord]:
        """Withdraw one scope, or with ``all_scopes`` every scope the purpose has (one call, effective at once)."""
        purpose = self._purpose(request.purpose)
        scopes = _scopes_of(purpose)
        if not scopes:
            raise InvalidArgument.single(
                "purpose", "the purpose does not rely on consent; there is nothing to withdraw"
            )
        if not all_scopes:
            if request.scope not in scopes:
                raise InvalidArgument.single("scope", "the purpose has no consent of this scope")
            scopes = [request.scope]
        _check_evidence(request.evidence_ref)
        _, dek = self._customers.open(customer_id)
        requests = [replace(request, scope=scope, notice_version="", notice_sha256="") for scope in scopes]
        return self._append(caller, customer_id, dek, ConsentAction.WITHDRAW, requests, request_id)

    def _append(
        self,
        caller: Caller,
        customer_id: str,
        dek: SecretKey,
        action: ConsentAction,
        requests: list[ConsentRequest],
        request_id: str,
    ) -> list[ConsentRecord]:
        request_key = request_key_of(self._request_mac, "consent-request-id", caller.principal, request_id)
        fingerprint = self._request_mac.digest("consent-body", _fingerprint(customer_id, action, requests))
        now = self._clock()
        cipher = FieldCipher(dek, CIPHER_VERSION)
        rows: list[dict[str, Any]] = []
        for index, request in enumerate(requests):
            record_id = str(uuid.uuid4())
            evidence = request.evidence_ref.encode()
            rows.append(
                {
                    "customer_id": customer_id,
                    "record_id": record_id,
                    "purpose": request.purpose,
                    "scope": request.scope.value,
                    "action": action.value,
                    "given_by": request.given_by.value,
                    "notice_version": request.notice_version,
                    "notice_sha256": bytes.fromhex(request.notice_sha256) if request.notice_sha256 else None,
                    "channel": request.channel.value,
                    "actor": caller.principal,
                    "actor_role": caller.role,
                    "evidence_ct": cipher.encrypt(evidence, FieldContext(TABLE, record_id, "evidence_ref"))
                    if evidence
                    else None,
                    "record_time": now,
                    # One request may append several records (a withdrawal of every scope); the first carries the key.
                    "request_key": request_key if index == 0 else None,
                    "request_digest": fingerprint if index == 0 else None,
                }
            )

        retires = action is ConsentAction.WITHDRAW and any(r.purpose == ANALYTICS for r in requests)

        def write(connection: Connection) -> None:
            if retires:  # the analytics side must forget this pseudonym; later purchases get a new one
                purchases_repo.retire(connection, customer_id, "consent_withdrawn", now)
            revision = repo.next_revision(connection, customer_id)
            for offset, row in enumerate(rows):
                row["revision"] = revision + offset
                repo.insert_record(connection, row)
                repo.set_state(
                    connection,
                    {
                        "customer_id": customer_id,
                        "purpose": row["purpose"],
                        "scope": row["scope"],
                        "granted": action is ConsentAction.GRANT,
                        "given_by": row["given_by"],
                        "revision": row["revision"],
                        "update_time": now,
                    },
                )

        event = AuditDraft.of(replace(caller, purpose=requests[0].purpose), "ok", (customer_id,))
        try:
            self._writer.submit(write, (event,))
        except SqlIntegrityError:
            return self._explain_conflict(customer_id, request_key, fingerprint, len(rows), dek)
        except OperationalError:
            raise Unavailable() from None
        return [_record(row, dek) for row in rows]

    def _explain_conflict(
        self, customer_id: str, request_key: bytes | None, fingerprint: bytes, count: int, dek: SecretKey
    ) -> list[ConsentRecord]:
        with self._database.read() as connection:
            first = None if request_key is None else repo.record_by_request(connection, request_key)
            if first is None:
                # The customer was erased meanwhile (the state row's foreign key), or a concurrent change took our
                # revision number: either way nothing was written, and a retry decides.
                self._customers.open(customer_id)
                raise Unavailable()
            if bytes(first.request_digest) != fingerprint:
                raise IdempotencyConflict()
            rows = repo.history(connection, customer_id, "", first.revision - 1, count)
        return [_record(row._asdict(), dek) for row in rows]

    # -- reads ----------------------------------------------------------------------------------------------------

    def current(self, caller: Caller, customer_id: str) -> list[ConsentStatus]:
        """The state of every consent that applies to this customer: each consent-based purpose, each separate consent
        for sensitive fields, and anything recorded for a purpose since removed from the registry."""
        self._subject(caller, customer_id)  # NotFound for an unknown or erased customer; restriction
        with self._database.read() as connection:
            rows = {(row.purpose, row.scope): row for row in repo.states(connection, customer_id)}
        wanted = [(purpose.name, scope) for purpose in self._registry for scope in _scopes_of(purpose)]
        wanted += [(name, ConsentScope(scope)) for name, scope in rows if (name, ConsentScope(scope)) not in wanted]
        statuses = [_status(name, scope, rows.get((name, scope.value))) for name, scope in wanted]
        self._audit.record(AuditDraft.of(caller, "ok", (customer_id,)))
        return statuses

    def history(self, caller: Caller, customer_id: str, purpose: str, page_size: int, page_token: str) -> HistoryPage:
        if purpose and purpose not in self._registry:
            raise InvalidArgument.single("purpose", "must be empty or a purpose from the registry")
        if page_size < 0:
            raise InvalidArgument.single("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_page_token(page_token)
        _, dek = self._subject(caller, customer_id)
        with self._database.read() as connection:
            rows = repo.history(connection, customer_id, purpose, after, size + 1)
        records = [_record(row._asdict(), dek) for row in rows[:size]]
        if caller.role not in _EVIDENCE_READERS:
            # The evidence reference (a receipt or form number) points at the collecting system's files about the
            # person; campaign roles see that a consent exists and how it was given, not where its proof is filed.
            records = [replace(record, evidence_ref="") for record in records]
        self._audit.record(AuditDraft.of(replace(caller, purpose=purpose), "ok", (customer_id,)))
        next_token = _encode_page_token(records[-1].revision) if len(rows) > size else ""
        return HistoryPage(records, next_token)

    @staticmethod
    def reseal(connection: Connection, customer_id: str, old_key: SecretKey, new_key: SecretKey) -> None:
        """Move the customer's evidence references from an old data key to a new one (a rectification re-keys)."""
        for row in repo.sealed_evidence(connection, customer_id):
            context = FieldContext(TABLE, row.record_id, "evidence_ref")
            evidence = FieldCipher(old_key, CIPHER_VERSION).decrypt(bytes(row.evidence_ct), context)
            repo.set_evidence(
                connection, customer_id, row.revision, FieldCipher(new_key, CIPHER_VERSION).encrypt(evidence, context)
            )

    def records_of(self, customer_id: str, dek: SecretKey) -> list[ConsentRecord]:
        """Every record of a customer, oldest first, for the vault's own workflows (the DSAR export; no audit here —
        the export is audited as a whole)."""
        records: list[ConsentRecord] = []
        after = 0
        while True:
            with self._database.read() as connection:
                rows = repo.history(connection, customer_id, "", after, MAX_PAGE_SIZE)
            records += [_record(row._asdict(), dek) for row in rows]
            if len(rows) < MAX_PAGE_SIZE:
                return records
            after = records[-1].revision

    def _subject(self, caller: Caller, customer_id: str) -> tuple[Customer, SecretKey]:
        """The customer a consent call concerns; a restricted customer's consents are not processed (the DPO's role
        excepted). A withdrawal never comes here: it is the customer's right whatever the state of their record."""
        row, customer, dek = self._customers.load(customer_id)
        if row.restricted and caller.role != "dpo":
            raise ProcessingRestricted((customer_id,))
        return customer, dek

    # -- helpers --------------------------------------------------------------------------------------------------

    def _purpose(self, name: str) -> Purpose:
        purpose = self._registry.get(name)
        if purpose is None:
            raise InvalidArgument.single("purpose", "must be a purpose from the registry (see `piivault purposes`)")
        return purpose


def _scopes_of(purpose: Purpose) -> list[ConsentScope]:
    scopes = [ConsentScope.STANDARD] if purpose.requires_consent else []
    return scopes + ([ConsentScope.SENSITIVE] if purpose.needs_separate_consent else [])


def _check_notice(request: ConsentRequest) -> None:
    version = request.notice_version
    if not (1 <= len(version) <= 64 and version.isascii() and version.isprintable()):
        raise InvalidArgument.single("notice_version", "is required: 1-64 printable ASCII characters")
    if not _SHA256_HEX.fullmatch(request.notice_sha256):
        raise InvalidArgument.single(
            "notice_sha256", "must be the SHA-256 of the notice text as 64 lower-case hex digits"
        )


def _check_evidence(evidence_ref: str) -> None:
    if len(evidence_ref) > 256 or not evidence_ref.isprintable():
        raise InvalidArgument.single("evidence_ref", "must be at most 256 printable characters")


def _fingerprint(customer_id: str, action: ConsentAction, requests: Sequence[ConsentRequest]) -> bytes:
    parts = [customer_id, action.value]
    for r in requests:
        parts += [r.purpose, r.scope.value, r.channel.value, r.given_by.value, r.notice_version, r.notice_sha256]
        parts.append(r.evidence_ref)
    return "\x1e".join(parts).encode()


def _record(row: dict[str, Any], dek: SecretKey) -> ConsentRecord:
    evidence = ""
    if row["evidence_ct"] is not None:
        context = FieldContext(TABLE, row["record_id"], "evidence_ref")
        try:
            evidence = FieldCipher(dek, CIPHER_VERSION).decrypt(bytes(row["evidence_ct"]), context).decode()
        except CryptoError:
            raise IntegrityError() from None
    digest = row["notice_sha256"]
    return ConsentRecord(
        record_id=row["record_id"],
        customer_id=row["customer_id"],
        revision=row["revision"],
        purpose=row["purpose"],
        scope=ConsentScope(row["scope"]),
        action=ConsentAction(row["action"]),
        given_by=GivenBy(row["given_by"]),
        notice_version=row["notice_version"],
        notice_sha256=None if digest is None else bytes(digest),
        channel=Channel(row["channel"]),
        actor=row["actor"],
        actor_role=row["actor_role"],
        evidence_ref=evidence,
        record_time=row["record_time"],
    )


def _status(purpose: str, scope: ConsentScope, row: Row[Any] | None) -> ConsentStatus:
    if row is None:
        return ConsentStatus(purpose, scope, ConsentState.NOT_GIVEN, None, 0, None)
    state = ConsentState.GRANTED if row.granted else ConsentState.WITHDRAWN
    return ConsentStatus(purpose, scope, state, GivenBy(row.given_by), row.revision, row.update_time)


def _encode_page_token(revision: int) -> str:
    return cursors.encode(_PAGE_PREFIX, str(revision))


def _decode_page_token(token: str) -> int:
    if not token:
        return 0
    rule = "must be a next_page_token returned by GetConsentHistory"
    return int(cursors.decode(token, _PAGE_PREFIX, lambda text: text.isdigit() and len(text) <= 12, "page_token", rule))
