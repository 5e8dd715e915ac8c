"""SQL for DSAR requests, and the customer flags they set (restriction, legal hold)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, case, insert, select, update

from vault.storage.models import Base, CustomerRow, DsarRequestRow

_requests = Base.metadata.tables[DsarRequestRow.__tablename__]
_customers = Base.metadata.tables[CustomerRow.__tablename__]

_GET = select(_requests).where(_requests.c.request_id == bindparam("id"))
_INSERT = insert(_requests)
_FLAGS = select(_customers.c.restricted, _customers.c.legal_hold).where(_customers.c.customer_id == bindparam("id"))


def get(connection: Connection, request_id: str) -> Row[Any] | None:
    return connection.execute(_GET, {"id": request_id}).first()


def insert_request(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_INSERT, values)


def change(connection: Connection, request_id: str, from_statuses: Sequence[str], values: dict[str, Any]) -> bool:
    """Compare-and-set on the status: False when the request is no longer in one of ``from_statuses``."""
    result = connection.execute(
        update(_requests)
        .where(_requests.c.request_id == request_id, _requests.c.status.in_(list(from_statuses)))
        .values(**values)
    )
    return result.rowcount == 1


def listing(
    connection: Connection, status: str, open_statuses: Sequence[str], today_iso: str, overdue_only: bool, limit: int
) -> Sequence[Row[Any]]:
    is_overdue = (_requests.c.status.in_(list(open_statuses))) & (_requests.c.due_date < today_iso)
    query = select(_requests)
    if status:
        query = query.where(_requests.c.status == status)
    if overdue_only:
        query = query.where(is_overdue)
    # Overdue first, then the nearest due date; the id keeps the order stable.
    order = case((is_overdue, 0), else_=1)
    return connection.execute(query.order_by(order, _requests.c.due_date, _requests.c.request_id).limit(limit)).all()


def flags(connection: Connection, customer_id: str) -> Any:
    """The customer's ``restricted`` and ``legal_hold`` flags, or None for no such customer."""
    return connection.execute(_FLAGS, {"id": customer_id}).first()


def set_flag(connection: Connection, customer_id: str, **values: bool) -> bool:
    result = connection.execute(update(_customers).where(_customers.c.customer_id == customer_id).values(**values))
    return result.rowcount == 1


def sealed_texts(connection: Connection, customer_id: str) -> Sequence[Any]:
    return connection.execute(
        select(_requests.c.request_id, _requests.c.rejection_text_ct).where(
            _requests.c.customer_id == customer_id, _requests.c.rejection_text_ct.is_not(None)
        )
    ).all()


def set_sealed_text(connection: Connection, request_id: str, sealed: bytes) -> None:
    connection.execute(update(_requests).where(_requests.c.request_id == request_id).values(rejection_text_ct=sealed))
