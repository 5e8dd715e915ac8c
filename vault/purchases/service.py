"""Recording purchases: validated, filed under the customer's active pseudonym, idempotent on (source, order_id).

A stream of purchases is recorded in batches: one transaction and one audit event per batch (naming every customer),
so an import of a channel's history is not one commit per row.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import OperationalError

from audit.events import AuditDraft, Caller, is_customer_id
from vault.crypto import Mac
from vault.errors import (
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    PiivaultError,
    ProcessingRestricted,
    Unavailable,
)
from vault.purchases import repository as repo
from vault.purchases.models import ANALYTICS, BatchSummary, PurchaseInput, Recorded, validate
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter, Inserts
from vault.storage.models import CustomerRow

BATCH = 1000
# ``json.dumps(…, ensure_ascii=False)`` without building an encoder per row; fingerprints of stored purchases are
# compared with this, so the format must not change.
_BODY_JSON = json.JSONEncoder(ensure_ascii=False)
_RULES = {
    NotFound: ("customer_id", "must be a live customer"),
    ProcessingRestricted: ("customer_id", "processing of this customer is restricted"),
    IdempotencyConflict: ("purchase.order_id", "was already recorded for this source with other content"),
}


class PurchaseService:
    def __init__(
        self,
        database: Database,
        writer: GroupCommitter,
        request_mac: Mac,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._database = database
        self._writer = writer
        self._mac = request_mac
        self._clock = clock

    def record(self, caller: Caller, customer_id: str, purchase: PurchaseInput) -> Recorded:
        _, recorded = self._record_batch(caller, [(customer_id, purchase)], raise_first=True)
        return recorded[0]

    def record_many(self, caller: Caller, items: Iterable[tuple[str, PurchaseInput]]) -> BatchSummary:
        summary = BatchSummary(rejections=[])
        batch: list[tuple[str, PurchaseInput]] = []
        offset = 0
        for item in items:
            batch.append(item)
            if len(batch) == BATCH:
                self._merge(summary, self._record_batch(caller, batch, offset=offset)[0])
                offset += len(batch)
                batch = []
        if batch:
            self._merge(summary, self._record_batch(caller, batch, offset=offset)[0])
        return summary

    @staticmethod
    def _merge(total: BatchSummary, part: BatchSummary) -> None:
        total.recorded += part.recorded
        total.duplicates += part.duplicates
        assert total.rejections is not None and part.rejections is not None
        total.rejections += part.rejections

    def _record_batch(
        self, caller: Caller, batch: Sequence[tuple[str, PurchaseInput]], *, offset: int = 0, raise_first: bool = False
    ) -> tuple[BatchSummary, list[Recorded]]:
        now = self._clock()
        summary = BatchSummary(rejections=[])
        assert summary.rejections is not None
        accepted: list[tuple[int, str, PurchaseInput]] = []
        for index, (customer_id, purchase) in enumerate(batch):
            try:
                if not is_customer_id(customer_id):
                    raise InvalidArgument.single("customer_id", "must be a customer id as returned by CreateCustomer")
                accepted.append((index, customer_id, validate(purchase, now)))
            except InvalidArgument as error:
                if raise_first:
                    raise
                summary.rejections += [(offset + index, v.field, v.rule) for v in error.violations]
        pseudonyms = self._pseudonyms(
            {customer_id for _, customer_id, _ in accepted}, now, raise_first, summary, offset, accepted
        )
        rows: list[dict[str, Any]] = []
        recorded: list[Recorded] = []
        with self._database.read() as connection:
            known = repo.known_orders(
                connection,
                [(p.source, p.return_of_order_id) for _, _, p in accepted if p.return_of_order_id]
                + [(p.source, p.order_id) for _, _, p in accepted],
            )
        seen: dict[tuple[str, str], dict[str, Any]] = {}  # the rows of this batch by order
        pending: list[tuple[int, str]] = []  # (index in the stream, customer) of each row in ``rows``
        for index, customer_id, purchase in accepted:
            if customer_id not in pseudonyms:
                continue
            returned = (purchase.source, purchase.return_of_order_id)
            if purchase.return_of_order_id and returned not in known and returned not in seen:
                rule = "must name an order already recorded for the same source"
                if raise_first:
                    raise InvalidArgument.single("purchase.return_of_order_id", rule)
                summary.rejections.append((offset + index, "purchase.return_of_order_id", rule))
                continue
            row = self._row(customer_id, pseudonyms[customer_id], purchase, now)
            order = (purchase.source, purchase.order_id)
            if order in known:
                recorded.append(self._replay(row, summary, offset + index, raise_first))
                continue
            if order in seen:  # the same order earlier in this batch, not stored yet: compared with that row
                recorded.append(self._replay(row, summary, offset + index, raise_first, seen[order]))
                continue
            seen[order] = row
            rows.append(row)
            pending.append((offset + index, customer_id))
            recorded.append(Recorded(row["purchase_id"], duplicate=False))
        if not rows:
            return summary, recorded
        event = AuditDraft.of(caller, "ok", tuple(dict.fromkeys(customer for _, customer in pending)))
        try:
            self._writer.submit(Inserts(((repo.purchases, tuple(rows)),)), (event,))
        except SqlIntegrityError:
            # A concurrent writer recorded one of these orders first: settle them one by one, each with its own event.
            settled: list[Recorded] = []
            for row, (index, customer_id) in zip(rows, pending, strict=True):
                try:
                    single = Inserts(((repo.purchases, (row,)),))
                    self._writer.submit(single, (AuditDraft.of(caller, "ok", (customer_id,)),))
                except SqlIntegrityError:
                    settled.append(self._replay(row, summary, index, raise_first))
                else:
                    summary.recorded += 1
                    settled.append(Recorded(row["purchase_id"], duplicate=False))
            return summary, settled
        except OperationalError:
            raise Unavailable() from None
        summary.recorded += len(rows)
        return summary, recorded

    def _replay(
        self,
        row: dict[str, Any],
        summary: BatchSummary,
        index: int,
        raise_first: bool,
        earlier: dict[str, Any] | None = None,
    ) -> Recorded:
        """A row whose order is recorded already (stored, or ``earlier`` in the same batch): a duplicate if its
        content is the same, else a conflict."""
        if earlier is None:
            with self._database.read() as connection:
                existing = repo.by_order(connection, row["source"], row["order_id"])
            first = None if existing is None else (existing.purchase_id, bytes(existing.fingerprint))
        else:
            first = (earlier["purchase_id"], earlier["fingerprint"])
        if first is not None and first[1] == row["fingerprint"]:
            summary.duplicates += 1
            return Recorded(first[0], duplicate=True)
        if raise_first:
            raise IdempotencyConflict("purchase.order_id was already recorded for this source with other content")
        assert summary.rejections is not None
        summary.rejections.append((index, *_RULES[IdempotencyConflict]))
        return Recorded("", duplicate=False)

    def _pseudonyms(
        self,
        customer_ids: set[str],
        now: dt.datetime,
        raise_first: bool,
        summary: BatchSummary,
        offset: int,
        accepted: list[tuple[int, str, PurchaseInput]],
    ) -> dict[str, str]:
        """The active analytics pseudonym of each live, unrestricted customer (issued on first use)."""
        found: dict[str, str] = {}
        if not customer_ids:
            return found
        with self._database.read() as connection:
            flags = {
                row.customer_id: row.restricted
                for row in connection.execute(
                    select(CustomerRow.customer_id, CustomerRow.restricted).where(
                        CustomerRow.customer_id.in_(sorted(customer_ids))
                    )
                )
            }
            found = repo.active_pseudonyms(connection, list(flags), ANALYTICS)
        for customer_id in sorted(customer_ids):
            error: PiivaultError | None = None
            if customer_id not in flags:
                error = NotFound()
            elif flags[customer_id]:
                error = ProcessingRestricted((customer_id,))
            if error is not None:
                if raise_first:
                    raise error
                assert summary.rejections is not None
                summary.rejections += [
                    (offset + index, *_RULES[type(error)]) for index, c, _ in accepted if c == customer_id
                ]
                found.pop(customer_id, None)
        missing = [c for c in sorted(customer_ids) if c in flags and not flags[c] and c not in found]
        if missing:
            found.update(self._issue(missing, now))
        return found

    def _issue(self, customer_ids: list[str], now: dt.datetime) -> dict[str, str]:
        """Issue analytics pseudonyms, in one transaction: random 128 bits each, never derived from the customer."""
        fresh = {customer_id: secrets.token_hex(16) for customer_id in customer_ids}

        def issue(connection: Any) -> dict[str, str]:
            current = repo.active_pseudonyms(connection, customer_ids, ANALYTICS)
            new = {c: p for c, p in fresh.items() if c not in current}
            repo.issue_pseudonyms(connection, new, ANALYTICS, now)
            return {**current, **new}

        try:
            issued: dict[str, str] = self._writer.submit(issue, ())
        except SqlIntegrityError:  # another process issued some at the same moment: use theirs
            with self._database.read() as connection:
                issued = repo.active_pseudonyms(connection, customer_ids, ANALYTICS)
            if len(issued) != len(customer_ids):
                raise Unavailable() from None
        return issued

    def _row(self, customer_id: str, pseudonym: str, purchase: PurchaseInput, now: dt.datetime) -> dict[str, Any]:
        lines = purchase.lines_json()
        body = _BODY_JSON.encode(
            [
                customer_id,
                purchase.source,
                purchase.order_id,
                purchase.store_id,
                purchase.purchase_time.isoformat() if purchase.purchase_time else "",
                purchase.amount_minor,
                purchase.currency,
                lines,
                purchase.payment_method,
                purchase.coupon,
                purchase.return_of_order_id,
            ]
        ).encode()
        return {
            "purchase_id": str(uuid.uuid4()),
            "source": purchase.source,
            "order_id": purchase.order_id,
            "pseudonym": pseudonym,
            "store_id": purchase.store_id,
            "purchase_time": purchase.purchase_time,
            "amount_minor": purchase.amount_minor,
            "currency": purchase.currency,
            "items": purchase.items,
            "payment_method": purchase.payment_method,
            "coupon": purchase.coupon,
            "lines": lines,
            "return_of_order_id": purchase.return_of_order_id,
            "record_time": now,
            # Keyed: the customer id is in the body, and a plain hash of it would link the purchase to them.
            "fingerprint": self._mac.digest("purchase-body", body),
        }

    def of_customer(self, customer_id: str) -> list[dict[str, Any]]:
        """Every purchase of a customer under any of their pseudonyms, for the DSAR export (no audit here)."""
        with self._database.read() as connection:
            rows = repo.of_customer(connection, customer_id)
        return [
            {
                "order_id": row.order_id,
                "source": row.source,
                "store_id": row.store_id,
                "time": row.purchase_time.isoformat(),
                "amount": f"{row.amount_minor / 100:.2f}",
                "currency": row.currency,
                "payment_method": row.payment_method,
                "coupon": row.coupon,
                "return_of_order_id": row.return_of_order_id,
                "lines": [
                    {"sku": s, "quantity": q, "unit_price": f"{p / 100:.2f}"} for s, q, p in json.loads(row.lines)
                ],
            }
            for row in rows
        ]
