"""The DPO's workflow for data-subject requests (PIPL arts. 44-50; GDPR arts. 15-21).

A request is opened for a customer found by any identifier, verified (the DPO checked the requester's identity), and
then completed by the step its type calls for — export, erasure, rectification or restriction — or rejected with a
reason. Every step is one transaction with its audit event; a completion commits with the change it completes.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Row

from audit.events import AuditDraft, Caller
from audit.log import AuditLog
from audit.queries import AuditQueries, EventFilter
from consent.service import ConsentService
from vault.crypto import CryptoError, FieldCipher, FieldContext, SecretKey, Signer
from vault.customers.erasure import CryptoShredder
from vault.customers.models import PERSONAL_FIELDS, IdentifierKind, Profile, is_empty
from vault.customers.service import CustomerService
from vault.dsar import repository as repo
from vault.dsar.export import build_package
from vault.dsar.models import OPEN_STATUSES, DsarRequest, DsarStatus, DsarType, RejectionReason
from vault.errors import ErasureBlocked, FailedPrecondition, InvalidArgument, NotFound
from vault.purchases.service import PurchaseService
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter

TABLE = "dsar_requests"
MAX_TEXT = 2000
_ERASED = (
    "profile ciphertexts",
    "data key",
    "blind indexes",
    "idempotency records",
    "current consent state",
    "pseudonym mapping (analytics tombstone written)",
    "purchases (deleted, or kept with no pseudonym, per PIIVAULT_ERASURE_PURCHASES)",
)


class RequestNotFound(NotFound):
    message = "no data-subject request with that request_id"


class WrongState(FailedPrecondition):
    message = "the request is not in a state that allows this step (see its status and type)"


class DsarService:
    def __init__(
        self,
        database: Database,
        writer: GroupCommitter,
        audit: AuditLog,
        customers: CustomerService,
        consents: ConsentService,
        shredder: CryptoShredder,
        purchases: PurchaseService,
        signer: Signer,
        due_days: int = 30,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._database = database
        self._writer = writer
        self._audit = audit
        self._customers = customers
        self._consents = consents
        self._shredder = shredder
        self._purchases = purchases
        self._signer = signer
        self._due_days = due_days
        self._clock = clock

    # -- the request's life ---------------------------------------------------------------------------------------

    def open(self, caller: Caller, kind: IdentifierKind | None, value: str, type_: DsarType) -> DsarRequest:
        """Open a request for the customer with this identifier (``kind`` None: ``value`` is the customer id)."""
        if kind is None:
            customer_id = self._customers.open(value)[0].customer_id
        else:
            customer_id = self._customers.resolve(kind, value)
        now = self._clock()
        values = {
            "request_id": "dsar_" + secrets.token_hex(8),
            "customer_id": customer_id,
            "type": type_.value,
            "status": DsarStatus.RECEIVED.value,
            "opened_by": caller.principal,
            "open_time": now,
            "due_date": (now.date() + dt.timedelta(days=self._due_days)).isoformat(),
        }
        self._writer.submit(lambda c: repo.insert_request(c, values), (self._event(caller, customer_id),))
        return _request(values)

    def verify(self, caller: Caller, request_id: str) -> DsarRequest:
        request = self._load(request_id)
        now = self._clock()
        change = {"status": DsarStatus.VERIFIED.value, "verified_by": caller.principal, "verify_time": now}
        self._transition(caller, request, (DsarStatus.RECEIVED,), change)
        return replace(request, status=DsarStatus.VERIFIED)

    def reject(self, caller: Caller, request_id: str, reason: RejectionReason | None, text: str) -> DsarRequest:
        """PIPL art. 50: a refusal states its reason. Both a reason code and a text are required."""
        if reason is None:
            raise InvalidArgument.single("reason", "is required: a rejection must state its reason (PIPL art. 50)")
        if not (len(text.strip()) >= 1 and len(text) <= MAX_TEXT and text.isprintable()):
            raise InvalidArgument.single("text", f"is required: 1-{MAX_TEXT} printable characters explaining why")
        request = self._load(request_id)
        now = self._clock()
        sealed = self._seal(request, text)
        change = {
            "status": DsarStatus.REJECTED.value,
            "rejection_reason": reason.value,
            "rejection_text_ct": sealed,
            "closed_by": caller.principal,
            "close_time": now,
        }
        self._transition(caller, request, OPEN_STATUSES, change)
        return replace(
            request, status=DsarStatus.REJECTED, rejection_reason=reason, rejection_text=text, close_time=now
        )

    def get(self, caller: Caller, request_id: str) -> DsarRequest:
        request = self._load(request_id, with_text=True)
        self._audit.record(self._event(caller, request.customer_id))
        return request

    def list(self, caller: Caller, status: DsarStatus | None, overdue_only: bool, page_size: int) -> list[DsarRequest]:
        if page_size < 0:
            raise InvalidArgument.single("page_size", "must not be negative")
        today = self._clock().date()
        with self._database.read() as connection:
            rows = repo.listing(
                connection,
                status.value if status else "",
                [s.value for s in OPEN_STATUSES],
                today.isoformat(),
                overdue_only,
                min(page_size or 100, 1000),
            )
        requests = [_request(row._asdict()) for row in rows]
        self._audit.record(AuditDraft.of(caller, "ok", tuple(dict.fromkeys(r.customer_id for r in requests))))
        return requests

    def today(self) -> dt.date:
        return self._clock().date()

    @property
    def public_key(self) -> bytes:
        """The Ed25519 key that signs export manifests and erasure receipts, for whoever checks them later."""
        return self._signer.public_key

    # -- completions ----------------------------------------------------------------------------------------------

    def export(self, caller: Caller, request_id: str) -> bytes:
        """The export package of a verified access or portability request; completes the request."""
        request = self._ready(request_id, (DsarType.ACCESS, DsarType.PORTABILITY))
        customer, dek = self._customers.open(request.customer_id)  # restriction does not stop the DPO's export
        consents = self._consents.records_of(request.customer_id, dek)
        access_log = [
            event
            for chunk in AuditQueries(self._database).events(EventFilter(customer_id=request.customer_id), 0, 10**9)
            for event in chunk
        ]
        now = self._clock()
        purchases = self._purchases.of_customer(request.customer_id)
        package = build_package(request.request_id, customer, consents, purchases, access_log, self._signer, now)
        fields = tuple(name for name in PERSONAL_FIELDS if not is_empty(getattr(customer.profile, name)))
        change = {"status": DsarStatus.COMPLETED.value, "closed_by": caller.principal, "close_time": now}
        self._transition(caller, request, (DsarStatus.VERIFIED,), change, fields)
        return package

    def erase(self, caller: Caller, request_id: str) -> tuple[DsarRequest, bytes]:
        """Crypto-shred the customer of a verified erasure request and return a signed receipt.

        Idempotent and resumable: the erasure ledger is written before the database, so a crash anywhere is finished
        by the next start-up's replay; running the step again then only completes the request."""
        request = self._ready(request_id, (DsarType.ERASURE,))
        with self._database.read() as connection:  # refuse early, before anything reaches the erasure ledger
            _refuse_held(connection, request.customer_id)
        now = self._clock()
        receipt_id = "rcpt_" + secrets.token_hex(8)
        change = {
            "status": DsarStatus.COMPLETED.value,
            "closed_by": caller.principal,
            "close_time": now,
            "receipt_id": receipt_id,
        }

        def complete(connection: Connection) -> None:
            _move(connection, request, (DsarStatus.VERIFIED,), change)

        def still_allowed(connection: Connection) -> None:
            # Again inside the erasing transaction: a hold or restriction placed since the check above must win.
            _refuse_held(connection, request.customer_id)

        self._shredder.shred(caller, request.customer_id, also=complete, check=still_allowed)
        receipt = {
            "format": "piivault-erasure-receipt/1",
            "receipt_id": receipt_id,
            "request_id": request.request_id,
            "customer_id": request.customer_id,
            "erased_at": now.isoformat(),
            "erased": list(_ERASED),
            "kept": "the consent ledger without its evidence references, the audit log (ids and field names only), "
            "and this request, as proof that the erasure was done",
        }
        body = json.dumps(receipt, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        signed = {
            **receipt,
            "public_key": self._signer.public_key.hex(),
            "signature": self._signer.sign(b"piivault-erasure-receipt/1\n" + body).hex(),
        }
        completed = replace(request, status=DsarStatus.COMPLETED, close_time=now, receipt_id=receipt_id)
        return completed, json.dumps(signed, ensure_ascii=False, indent=2, sort_keys=True).encode()

    def rectify(self, caller: Caller, request_id: str, patch: Profile, mask: Sequence[str]) -> DsarRequest:
        request = self._ready(request_id, (DsarType.RECTIFICATION,))
        now = self._clock()
        change = {"status": DsarStatus.COMPLETED.value, "closed_by": caller.principal, "close_time": now}

        def complete(connection: Connection, old_key: SecretKey, new_key: SecretKey) -> None:
            _move(connection, request, (DsarStatus.VERIFIED,), change)
            # Everything else sealed under the old key moves to the new one, in the same transaction.
            self._consents.reseal(connection, request.customer_id, old_key, new_key)
            self._reseal_texts(connection, request.customer_id, old_key, new_key)

        self._customers.rectify(caller, patch, request.customer_id, mask, also=complete)
        return replace(request, status=DsarStatus.COMPLETED, close_time=now)

    def restrict(self, caller: Caller, request_id: str) -> DsarRequest:
        request = self._ready(request_id, (DsarType.RESTRICTION,))
        now = self._clock()
        change = {"status": DsarStatus.COMPLETED.value, "closed_by": caller.principal, "close_time": now}

        def apply(connection: Connection) -> None:
            if not repo.set_flag(connection, request.customer_id, restricted=True):
                raise NotFound()

        self._transition(caller, request, (DsarStatus.VERIFIED,), change, also=apply)
        return replace(request, status=DsarStatus.COMPLETED, close_time=now)

    def lift_restriction(self, caller: Caller, customer_id: str) -> None:
        self._flag(caller, customer_id, restricted=False)

    def set_legal_hold(self, caller: Caller, customer_id: str, hold: bool) -> None:
        self._flag(caller, customer_id, legal_hold=hold)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _flag(self, caller: Caller, customer_id: str, **values: bool) -> None:
        self._customers.open(customer_id)  # NotFound for an unknown or erased customer

        def apply(connection: Connection) -> None:
            if not repo.set_flag(connection, customer_id, **values):
                raise NotFound()

        self._writer.submit(apply, (self._event(caller, customer_id),))

    def _event(self, caller: Caller, customer_id: str, fields: tuple[str, ...] = ()) -> AuditDraft:
        return AuditDraft.of(replace(caller, purpose=caller.purpose or "dsar"), "ok", (customer_id,), fields)

    def _ready(self, request_id: str, types: tuple[DsarType, ...]) -> DsarRequest:
        request = self._load(request_id)
        if request.type not in types or request.status is not DsarStatus.VERIFIED:
            raise WrongState()
        return request

    def _transition(
        self,
        caller: Caller,
        request: DsarRequest,
        from_statuses: Sequence[DsarStatus],
        change: dict[str, Any],
        fields: tuple[str, ...] = (),
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        def write(connection: Connection) -> None:
            _move(connection, request, from_statuses, change)
            if also is not None:
                also(connection)

        self._writer.submit(write, (self._event(caller, request.customer_id, fields),))

    def _load(self, request_id: str, *, with_text: bool = False) -> DsarRequest:
        if not (request_id.startswith("dsar_") and len(request_id) == 21):
            raise InvalidArgument.single("request_id", "must be a request id as returned by OpenRequest")
        with self._database.read() as connection:
            row = repo.get(connection, request_id)
        if row is None:
            raise RequestNotFound()
        request = _request(row._asdict())
        if with_text and row.rejection_text_ct is not None:
            request = replace(request, rejection_text=self._unseal(row))
        return request

    @staticmethod
    def _reseal_texts(connection: Connection, customer_id: str, old_key: SecretKey, new_key: SecretKey) -> None:
        for row in repo.sealed_texts(connection, customer_id):
            context = FieldContext(TABLE, row.request_id, "rejection_text")
            text = FieldCipher(old_key, 1).decrypt(bytes(row.rejection_text_ct), context)
            repo.set_sealed_text(connection, row.request_id, FieldCipher(new_key, 1).encrypt(text, context))

    def _seal(self, request: DsarRequest, text: str) -> bytes | None:
        """The rejection text under the customer's data key (it may name the person); None once they are erased."""
        try:
            _, dek = self._customers.open(request.customer_id)
        except NotFound:
            return None
        return FieldCipher(dek, 1).encrypt(text.encode(), FieldContext(TABLE, request.request_id, "rejection_text"))

    def _unseal(self, row: Row[Any]) -> str:
        try:
            _, dek = self._customers.open(row.customer_id)
            context = FieldContext(TABLE, row.request_id, "rejection_text")
            return FieldCipher(dek, 1).decrypt(bytes(row.rejection_text_ct), context).decode()
        except (NotFound, CryptoError):
            return ""  # shredded with the customer


def _refuse_held(connection: Connection, customer_id: str) -> None:
    flags = repo.flags(connection, customer_id)
    if flags is not None and (flags.legal_hold or flags.restricted):
        raise ErasureBlocked(bool(flags.legal_hold), customer_id)


def _move(
    connection: Connection, request: DsarRequest, from_statuses: Sequence[DsarStatus], change: dict[str, Any]
) -> None:
    """Change the request only if it is still in one of ``from_statuses`` (another DPO may have acted meanwhile)."""
    if not repo.change(connection, request.request_id, [status.value for status in from_statuses], change):
        raise WrongState()


def _request(values: dict[str, Any]) -> DsarRequest:
    reason = values.get("rejection_reason")
    return DsarRequest(
        request_id=values["request_id"],
        customer_id=values["customer_id"],
        type=DsarType(values["type"]),
        status=DsarStatus(values["status"]),
        opened_by=values["opened_by"],
        open_time=values["open_time"],
        due_date=dt.date.fromisoformat(values["due_date"]),
        close_time=values.get("close_time"),
        rejection_reason=RejectionReason(reason) if reason else None,
        receipt_id=values.get("receipt_id") or "",
    )


__all__ = ["DsarService", "RequestNotFound", "WrongState"]
