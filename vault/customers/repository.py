"""SQL for the customer aggregate: SQLAlchemy Core on the mapped tables, statements built once (the two lookups of
every GetCustomer and FindCustomers run the same statements on the driver's connection, see ``DriverQuery``).

Parameters are always bound at execution, never baked into a statement with ``.values(...)`` or literals: a
statement built per call costs SQLAlchemy a fresh cache key each time, which measured as most of a create's cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, delete, insert, select, update
from sqlalchemy.sql.dml import Update

from consent.repository import GRANTED_FOR_PURPOSE
from vault.customers.models import IdentifierKind
from vault.storage.db import DriverQuery, DriverReader
from vault.storage.group_commit import Inserts
from vault.storage.models import Base, BlindIndexRow, CustomerRow, IdempotencyRow

_customers = Base.metadata.tables[CustomerRow.__tablename__]
_indexes = Base.metadata.tables[BlindIndexRow.__tablename__]
_idempotency = Base.metadata.tables[IdempotencyRow.__tablename__]

_GET = select(_customers).where(_customers.c.customer_id == bindparam("id"))
_PAGE_FIRST = select(_customers).order_by(_customers.c.customer_id).limit(bindparam("limit"))
_PAGE_AFTER = _PAGE_FIRST.where(_customers.c.customer_id > bindparam("after"))
_INSERT_CUSTOMER = insert(_customers)
_OWNERS = select(_indexes.c.kind, _indexes.c.digest, _indexes.c.customer_id).where(
    _indexes.c.digest.in_(bindparam("digests", expanding=True))
)
_OWNER = select(_indexes.c.customer_id).where(
    _indexes.c.digest == bindparam("digest"), _indexes.c.kind == bindparam("kind")
)
_INSERT_INDEX = insert(_indexes)
_DELETE_INDEXES = delete(_indexes).where(
    _indexes.c.customer_id == bindparam("id"), _indexes.c.kind.in_(bindparam("kinds", expanding=True))
)
_GET_IDEMPOTENCY = select(_idempotency).where(_idempotency.c.key_digest == bindparam("key"))
_INSERT_IDEMPOTENCY = insert(_idempotency)


def get_row(connection: Connection, customer_id: str) -> Row[Any] | None:
    return connection.execute(_GET, {"id": customer_id}).first()


_FETCH_ROW = DriverQuery(_GET, "CustomerRecord")
_FETCH_OWNER = DriverQuery(_OWNER, "Owner")


def fetch_row(reader: DriverReader, customer_id: str) -> Any | None:
    """``get_row`` on the driver's connection (GetCustomer, FindCustomers): the same row, the same types."""
    return _FETCH_ROW.first(reader, {"id": customer_id})


def page_rows(connection: Connection, after: str, limit: int, consented_to: str = "") -> Sequence[Row[Any]]:
    """Customers in id order after ``after``; with ``consented_to``, only those with a current consent to it."""
    statement = _PAGE_AFTER if after else _PAGE_FIRST
    parameters: dict[str, Any] = {"after": after, "limit": limit} if after else {"limit": limit}
    if consented_to:
        statement = _consented(statement)
        parameters["consent_purpose"] = consented_to
    return connection.execute(statement, parameters).all()


@cache
def _consented(statement: Select[Any]) -> Select[Any]:
    return statement.where(_customers.c.customer_id.in_(GRANTED_FOR_PURPOSE))


def insert_customer(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_INSERT_CUSTOMER, values)


@cache
def _update_statement(columns: tuple[str, ...]) -> Update:
    return (
        update(_customers)
        .where(_customers.c.customer_id == bindparam("match_id"), _customers.c.version == bindparam("match_version"))
        .values(version=_customers.c.version + 1, **{name: bindparam(name) for name in columns})
    )


def update_customer(connection: Connection, customer_id: str, expected_version: int, values: dict[str, Any]) -> bool:
    """Compare-and-set on ``version``: False when the customer changed (or vanished) since ``expected_version``."""
    statement = _update_statement(tuple(sorted(values)))
    result = connection.execute(statement, {"match_id": customer_id, "match_version": expected_version, **values})
    return result.rowcount == 1


def owners(connection: Connection, digests: Iterable[tuple[IdentifierKind, bytes]]) -> dict[tuple[str, bytes], str]:
    """Which live customer owns each (kind, digest), for those that are taken."""
    wanted = {(kind.value, digest) for kind, digest in digests}
    if not wanted:
        return {}
    rows = connection.execute(_OWNERS, {"digests": [digest for _, digest in wanted]}).all()
    found = {(row.kind, bytes(row.digest)): row.customer_id for row in rows}
    return {key: owner for key, owner in found.items() if key in wanted}


def owner(reader: DriverReader, kind: IdentifierKind, digest: bytes) -> str | None:
    """The live customer holding the identifier (on the driver's connection: every FindCustomers runs it)."""
    found = _FETCH_OWNER.first(reader, {"digest": digest, "kind": kind.value})
    return None if found is None else str(found.customer_id)


def insert_indexes(connection: Connection, customer_id: str, digests: Sequence[tuple[IdentifierKind, bytes]]) -> None:
    if digests:
        connection.execute(
            _INSERT_INDEX, [{"kind": k.value, "digest": d, "customer_id": customer_id} for k, d in digests]
        )


def delete_indexes(connection: Connection, customer_id: str, kinds: Iterable[IdentifierKind]) -> None:
    names = [kind.value for kind in kinds]
    if names:
        connection.execute(_DELETE_INDEXES, {"id": customer_id, "kinds": names})


def get_idempotency(connection: Connection, key_digest: bytes) -> Row[Any] | None:
    return connection.execute(_GET_IDEMPOTENCY, {"key": key_digest}).first()


def insert_idempotency(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_INSERT_IDEMPOTENCY, values)


def customer_inserts(
    values: dict[str, Any], customer_id: str, digests: Sequence[tuple[IdentifierKind, bytes]]
) -> Inserts:
    """A new customer and its blind indexes, as rows the group committer can merge with other creates."""
    index_rows = tuple({"digest": d, "kind": k.value, "customer_id": customer_id} for k, d in digests)
    return Inserts(((_customers, (values,)), (_indexes, index_rows)))


def bulk_inserts(customer_rows: Sequence[dict[str, Any]], index_rows: Sequence[dict[str, Any]]) -> Inserts:
    return Inserts(((_customers, tuple(customer_rows)), (_indexes, tuple(index_rows))))


def with_idempotency(inserts: Inserts, row: dict[str, Any]) -> Inserts:
    return Inserts(((_idempotency, (row,)), *inserts.rows))
