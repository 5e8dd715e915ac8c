"""The checks of the crash-safety harness: what the database must hold after every crash and retry.

Run against the database directly — the project's own ``Vault`` (to unwrap keys, decrypt and compute blind indexes)
and SQL on its tables — with no server in between: every acknowledged write is there exactly once, no customer is
partial (row, wrapped DEK, blind indexes, audit events all or nothing), and the audit chain verifies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, exists, func, or_, select

from piivault.v1 import customers_pb2 as cpb
from piivault.v1 import purchases_pb2 as ppb
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import PERSONAL_FIELDS, Profile
from vault.errors import PiivaultError
from vault.storage.db import Database, make_engine
from vault.storage.models import (
    AuditEventRow,
    AuditSubjectRow,
    BlindIndexRow,
    CustomerRow,
    IdempotencyRow,
    PseudonymRow,
    PurchaseRow,
)

CREATE = "/piivault.v1.CustomerService/CreateCustomer"
UPDATE = "/piivault.v1.CustomerService/UpdateCustomer"
PURCHASE = "/piivault.v1.PurchaseService/RecordPurchase"
SOURCE = "pos"


@dataclass(eq=False)
class TrackedCustomer:
    serial: int
    request: cpb.CreateCustomerRequest
    profile: Profile  # what the vault must hold now, canonical
    customer_id: str = ""  # known once the create is acknowledged
    version: int = 0
    orders: list[TrackedOrder] = field(default_factory=list)  # acknowledged purchases
    create_events: int = 1  # 2 when a retried create was answered from the idempotency record (it is audited too)


@dataclass(eq=False)
class TrackedOrder:
    request: ppb.RecordPurchaseRequest
    purchase_id: str = ""


def _chunks(items: Sequence[Any], size: int = 400) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class Checker:
    """Inspects the database with the project's own classes (``Vault``) and SQL, with no server in between."""

    def __init__(self, settings: Settings, problem: Callable[[str, str], None]) -> None:
        self._settings = settings
        self._problem = problem
        self._audit_seen = 0  # audit events up to here were checked for events without their write

    def check(self, every: Sequence[TrackedCustomer], customers: Sequence[TrackedCustomer], verify_chain: bool) -> None:
        """Totals against ``every`` acknowledged customer, each of ``customers`` in detail, and the chain."""
        # The checker's own engine: no WAL checkpointer, so checking writes nothing to the server's database.
        database = Database(make_engine(self._settings.effective_database_url, pool_size=2))
        vault = Vault.open(self._settings, database=database)
        try:
            with database.snapshot() as connection:
                self._totals(connection, every)
                for chunk in _chunks(customers):
                    self._customers(vault, connection, chunk)
            if verify_chain:
                report = vault.audit_verifier.verify()
                if not report.intact:
                    self._problem("audit", f"chain does not verify at seq {report.first_bad_seq}: {report.problem}")
        finally:
            vault.close()
            database.dispose()

    def _totals(self, connection: Connection, every: Sequence[TrackedCustomer]) -> None:
        def count(statement: Any) -> int:
            return int(connection.execute(statement).scalar_one())

        known = {c.customer_id for c in every}
        stored = count(select(func.count()).select_from(CustomerRow))
        if stored != len(known):
            extra = [i for i in connection.execute(select(CustomerRow.customer_id)).scalars() if i not in known]
            for customer_id in extra[:20]:
                self._problem("duplicate", f"customer {customer_id} was never acknowledged to any request")
            if len(extra) > 20:
                self._problem("duplicate", f"{len(extra) - 20} more unacknowledged customers")
            if stored - len(extra) != len(known):
                self._problem("lost", f"{len(known) - stored + len(extra)} acknowledged customers are missing")
        indexes = count(select(func.count()).select_from(BlindIndexRow))
        expected_indexes = sum(len(c.profile.identifiers()) for c in every)
        if indexes != expected_indexes:
            self._problem("partial", f"{indexes} blind-index rows, expected {expected_indexes}")
        owner_missing = ~exists().where(CustomerRow.customer_id == BlindIndexRow.customer_id)
        orphans = count(select(func.count()).select_from(BlindIndexRow).where(owner_missing))
        if orphans:
            self._problem("partial", f"{orphans} blind-index rows of no customer")
        no_dek = or_(CustomerRow.wrapped_dek.is_(None), CustomerRow.wrapped_dek == "")
        keyless = count(select(func.count()).select_from(CustomerRow).where(no_dek))
        if keyless:
            self._problem("partial", f"{keyless} customers without a wrapped DEK")
        requests = count(select(func.count()).select_from(IdempotencyRow))
        if requests != len(known):
            self._problem("duplicate" if requests > len(known) else "partial", f"{requests} request ids stored")
        dangling = ~exists().where(CustomerRow.customer_id == IdempotencyRow.customer_id)
        if count(select(func.count()).select_from(IdempotencyRow).where(dangling)):
            self._problem("partial", "a request id names a customer that does not exist")
        orders = sum(len(c.orders) for c in every)
        purchases = count(select(func.count()).select_from(PurchaseRow))
        if purchases != orders:
            self._problem("duplicate" if purchases > orders else "lost", f"{purchases} purchases, expected {orders}")
        unfiled = ~exists().where(PseudonymRow.pseudonym == PurchaseRow.pseudonym)
        if count(select(func.count()).select_from(PurchaseRow).where(unfiled)):
            self._problem("partial", "a purchase is filed under a pseudonym of no customer")
        # An audit event of a write whose write is not there is as partial as a write without its event.
        written = (
            select(AuditSubjectRow.customer_id, func.max(AuditSubjectRow.seq))
            .join(AuditEventRow, AuditEventRow.seq == AuditSubjectRow.seq)
            .where(
                AuditSubjectRow.seq > self._audit_seen,
                AuditEventRow.action.in_((CREATE, UPDATE, PURCHASE)),
                AuditEventRow.outcome == "ok",
            )
            .group_by(AuditSubjectRow.customer_id)
        )
        for customer_id, seq in connection.execute(written):
            self._audit_seen = max(self._audit_seen, int(seq))
            if customer_id not in known:
                self._problem("partial", f"audit event of a write to {customer_id}, which is not stored")

    def _customers(self, vault: Vault, connection: Connection, customers: Sequence[TrackedCustomer]) -> None:
        ids = [c.customer_id for c in customers]
        rows = {
            r.customer_id: r
            for r in connection.execute(select(CustomerRow.__table__).where(CustomerRow.customer_id.in_(ids)))
        }
        profiles = self._decrypt(vault, list(rows.values()))
        indexes: dict[str, set[tuple[str, bytes]]] = {}
        index_rows = select(BlindIndexRow.customer_id, BlindIndexRow.kind, BlindIndexRow.digest)
        for owner, kind, digest in connection.execute(index_rows.where(BlindIndexRow.customer_id.in_(ids))):
            indexes.setdefault(owner, set()).add((kind, bytes(digest)))
        events: Counter[tuple[str, str]] = Counter()
        for customer_id, action, n in connection.execute(
            select(AuditSubjectRow.customer_id, AuditEventRow.action, func.count())
            .join(AuditEventRow, AuditEventRow.seq == AuditSubjectRow.seq)
            .where(AuditSubjectRow.customer_id.in_(ids), AuditEventRow.outcome == "ok")
            .group_by(AuditSubjectRow.customer_id, AuditEventRow.action)
        ):
            events[(customer_id, action)] = int(n)
        order_ids = [o.request.purchase.order_id for c in customers for o in c.orders]
        purchases: dict[str, list[Any]] = {}
        for chunk in _chunks(order_ids):
            for r in connection.execute(
                select(
                    PurchaseRow.order_id, PurchaseRow.purchase_id, PurchaseRow.amount_minor, PseudonymRow.customer_id
                )
                .outerjoin(PseudonymRow, PseudonymRow.pseudonym == PurchaseRow.pseudonym)
                .where(PurchaseRow.source == SOURCE, PurchaseRow.order_id.in_(chunk))
            ):
                purchases.setdefault(r.order_id, []).append(r)
        for customer in customers:
            self._customer(vault, customer, rows.get(customer.customer_id), profiles, indexes, events, purchases)

    @staticmethod
    def _decrypt(vault: Vault, rows: list[Any]) -> dict[str, Profile | None]:
        """The stored profiles (None for one that does not decrypt), unwrapped and decrypted by the vault's own code:
        in one batch (``CustomerService.open`` per customer measured 4 ms each, too slow for a soak's full checks),
        and customer by customer only if the batch fails, to name the bad one."""
        try:
            return {c.customer_id: c.profile for c in vault.customers._decrypt_rows(rows)}
        except PiivaultError:
            profiles: dict[str, Profile | None] = {}
            for row in rows:
                try:
                    profiles[row.customer_id] = vault.customers.open(row.customer_id)[0].profile
                except PiivaultError:
                    profiles[row.customer_id] = None
            return profiles

    def _customer(
        self,
        vault: Vault,
        customer: TrackedCustomer,
        row: Any,
        profiles: dict[str, Profile | None],
        indexes: dict[str, set[tuple[str, bytes]]],
        events: Counter[tuple[str, str]],
        purchases: dict[str, list[Any]],
    ) -> None:
        cid = customer.customer_id
        if row is None:
            self._problem("lost", f"acknowledged customer {cid} is not stored")
            return
        if row.version != customer.version:
            self._problem("lost", f"customer {cid} is at version {row.version}, acknowledged {customer.version}")
        stored = profiles[cid]
        if stored is None:
            self._problem("partial", f"customer {cid} does not decrypt")
        elif stored != customer.profile:
            differ = [n for n in PERSONAL_FIELDS if getattr(stored, n) != getattr(customer.profile, n)]
            self._problem("lost", f"customer {cid} holds other values in {differ}")
        expected = {(kind.value, digest) for kind, digest in vault.customers.digests(customer.profile)}
        found = indexes.get(cid, set())
        if found != expected:
            self._problem(
                "partial", f"customer {cid}: {len(expected - found)} index rows missing, {len(found - expected)} extra"
            )
        creates = events[(cid, CREATE)]
        if creates != customer.create_events:
            kind = "partial" if creates < customer.create_events else "audit"
            self._problem(kind, f"customer {cid}: {creates} create events, expected {customer.create_events}")
        if events[(cid, UPDATE)] != customer.version - 1:
            self._problem(
                "audit", f"customer {cid}: {events[(cid, UPDATE)]} update events, {customer.version - 1} updates"
            )
        if events[(cid, PURCHASE)] != len(customer.orders):
            self._problem(
                "audit", f"customer {cid}: {events[(cid, PURCHASE)]} purchase events, {len(customer.orders)} orders"
            )
        for order in customer.orders:
            purchase = order.request.purchase
            stored_orders = purchases.get(purchase.order_id, [])
            if not stored_orders:
                self._problem("lost", f"acknowledged order {purchase.order_id} is not stored")
            elif len(stored_orders) > 1:
                self._problem("duplicate", f"order {purchase.order_id} is stored {len(stored_orders)} times")
            else:
                found_order = stored_orders[0]
                if (found_order.purchase_id, found_order.amount_minor, found_order.customer_id) != (
                    order.purchase_id,
                    purchase.amount_minor,
                    cid,
                ):
                    self._problem("partial", f"order {purchase.order_id} is not the one acknowledged to {cid}")
