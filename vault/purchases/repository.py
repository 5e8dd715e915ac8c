"""SQL for purchases, pseudonyms and the analytics tombstones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, exists, false, insert, literal, select, true, update

from vault.storage.models import (
    ActivePseudonymRow,
    Base,
    ConsentStateRow,
    CustomerRow,
    PseudonymRow,
    PurchaseRow,
    TombstoneRow,
)

purchases = Base.metadata.tables[PurchaseRow.__tablename__]
_active = Base.metadata.tables[ActivePseudonymRow.__tablename__]
_pseudonyms = Base.metadata.tables[PseudonymRow.__tablename__]
_tombstones = Base.metadata.tables[TombstoneRow.__tablename__]
_state = Base.metadata.tables[ConsentStateRow.__tablename__]
_customers = Base.metadata.tables[CustomerRow.__tablename__]

_ACTIVE = select(_active.c.pseudonym).where(
    _active.c.customer_id == bindparam("id"), _active.c.domain == bindparam("domain")
)
_BY_ORDER = select(purchases.c.purchase_id, purchases.c.fingerprint).where(
    purchases.c.source == bindparam("source"), purchases.c.order_id == bindparam("order_id")
)
# Both columns constrained, so the (source, order_id) unique index answers it: on order_id alone neither SQLite nor
# PostgreSQL can use that index, and every batch of a purchase import scanned the whole table (quadratic imports).
_ORDERS = select(purchases.c.source, purchases.c.order_id).where(
    purchases.c.source.in_(bindparam("sources", expanding=True)),
    purchases.c.order_id.in_(bindparam("order_ids", expanding=True)),
)


def active_pseudonyms(connection: Connection, customer_ids: Sequence[str], domain: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(customer_ids), 500):
        chunk = list(customer_ids[start : start + 500])
        rows = connection.execute(
            select(_active.c.customer_id, _active.c.pseudonym).where(
                _active.c.customer_id.in_(chunk), _active.c.domain == domain
            )
        )
        found.update({row.customer_id: row.pseudonym for row in rows})
    return found


def issue_pseudonyms(connection: Connection, pseudonyms: dict[str, str], domain: str, now: dt.datetime) -> None:
    if not pseudonyms:
        return
    connection.execute(
        insert(_pseudonyms),
        [{"pseudonym": p, "customer_id": c, "domain": domain, "create_time": now} for c, p in pseudonyms.items()],
    )
    connection.execute(
        insert(_active), [{"customer_id": c, "domain": domain, "pseudonym": p} for c, p in pseudonyms.items()]
    )


def retire(connection: Connection, customer_id: str, reason: str, now: dt.datetime) -> list[str]:
    """Retire the customer's active pseudonyms and write their tombstones (in the caller's transaction)."""
    retired = list(
        connection.execute(select(_active.c.pseudonym).where(_active.c.customer_id == customer_id)).scalars()
    )
    if retired:
        connection.execute(delete(_active).where(_active.c.customer_id == customer_id))
        connection.execute(insert(_tombstones), [{"pseudonym": p, "reason": reason, "time": now} for p in retired])
    return retired


def refile(connection: Connection, from_customer: str, to_customer: str, now: dt.datetime) -> None:
    """At a merge: the duplicate's pseudonyms (and so its purchases) now belong to the survivor; its active pseudonym
    is retired with a tombstone (reason ``merged``) so the analytics side does not count one person twice."""
    retire(connection, from_customer, "merged", now)
    connection.execute(
        update(_pseudonyms).where(_pseudonyms.c.customer_id == from_customer).values(customer_id=to_customer)
    )


def forget_purchases(connection: Connection, customer_id: str, *, delete_rows: bool) -> None:
    """At erasure: delete the customer's purchases, or keep them anonymous (no pseudonym, so never linkable)."""
    filed_under = select(_pseudonyms.c.pseudonym).where(_pseudonyms.c.customer_id == customer_id)
    if delete_rows:
        connection.execute(delete(purchases).where(purchases.c.pseudonym.in_(filed_under)))
    else:
        # Anonymous for real: no pseudonym, and no order id or coupon the channel could link back to the customer.
        anonymous = {"pseudonym": "", "order_id": literal("anon:") + purchases.c.purchase_id, "coupon": ""}
        connection.execute(update(purchases).where(purchases.c.pseudonym.in_(filed_under)).values(**anonymous))


def by_order(connection: Connection, source: str, order_id: str) -> Any:
    return connection.execute(_BY_ORDER, {"source": source, "order_id": order_id}).first()


def known_orders(connection: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    wanted = {"sources": sorted({source for source, _ in keys}), "order_ids": sorted({order for _, order in keys})}
    rows = connection.execute(_ORDERS, wanted).all()
    pairs = set(keys)
    return {(row.source, row.order_id) for row in rows if (row.source, row.order_id) in pairs}


def of_customer(connection: Connection, customer_id: str) -> Sequence[Row[Any]]:
    filed_under = select(_pseudonyms.c.pseudonym).where(_pseudonyms.c.customer_id == customer_id)
    return connection.execute(
        select(purchases).where(purchases.c.pseudonym.in_(filed_under)).order_by(purchases.c.seq)
    ).all()


def feed(connection: Connection, after_seq: int, before: dt.datetime, limit: int) -> Sequence[Row[Any]]:
    """Purchases after ``after_seq`` recorded before ``before``, each with whether it may be exported now: its
    pseudonym is still active and its customer has a current analytics consent and is not restricted."""
    exportable = exists(
        select(1)
        .select_from(_active.join(_state, _state.c.customer_id == _active.c.customer_id))
        .join(_customers, _customers.c.customer_id == _active.c.customer_id)
        .where(
            _active.c.pseudonym == purchases.c.pseudonym,
            _state.c.purpose == "analytics",
            _state.c.scope == "standard",
            _state.c.granted == true(),
            _customers.c.restricted == false(),
        )
    ).label("exportable")
    query = (
        select(purchases, exportable)
        .where(and_(purchases.c.seq > after_seq, purchases.c.record_time < before))
        .order_by(purchases.c.seq)
        .limit(limit)
    )
    return connection.execute(query).all()


def tombstones(connection: Connection, after_seq: int, before: dt.datetime, limit: int) -> Sequence[Row[Any]]:
    return connection.execute(
        select(_tombstones)
        .where(_tombstones.c.seq > after_seq, _tombstones.c.time < before)
        .order_by(_tombstones.c.seq)
        .limit(limit)
    ).all()
