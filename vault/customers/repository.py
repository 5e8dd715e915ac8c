"""SQL for the customer aggregate (SQLAlchemy Core on the mapped tables: this is the hot path)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, tuple_, update

from vault.customers.models import IdentifierKind
from vault.storage.models import Base, BlindIndexRow, CustomerRow, IdempotencyRow

_customers = Base.metadata.tables[CustomerRow.__tablename__]
_indexes = Base.metadata.tables[BlindIndexRow.__tablename__]
_idempotency = Base.metadata.tables[IdempotencyRow.__tablename__]


def get_row(connection: Connection, customer_id: str) -> Row[Any] | None:
    return connection.execute(select(_customers).where(_customers.c.customer_id == customer_id)).first()


def page_rows(connection: Connection, after: str, limit: int) -> Sequence[Row[Any]]:
    query = select(_customers).order_by(_customers.c.customer_id).limit(limit)
    if after:
        query = query.where(_customers.c.customer_id > after)
    return connection.execute(query).all()


def insert_customer(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(_customers).values(values))


def update_customer(connection: Connection, customer_id: str, expected_version: int, values: dict[str, Any]) -> bool:
    """Compare-and-set on ``version``: False when the customer changed (or vanished) since ``expected_version``."""
    result = connection.execute(
        update(_customers)
        .where(_customers.c.customer_id == customer_id, _customers.c.version == expected_version)
        .values(version=_customers.c.version + 1, **values)
    )
    return result.rowcount == 1


def owners(connection: Connection, digests: Iterable[tuple[IdentifierKind, bytes]]) -> dict[tuple[str, bytes], str]:
    """Which live customer owns each (kind, digest), for those that are taken."""
    keys = [(kind.value, digest) for kind, digest in digests]
    if not keys:
        return {}
    rows = connection.execute(
        select(_indexes.c.kind, _indexes.c.digest, _indexes.c.customer_id).where(
            tuple_(_indexes.c.kind, _indexes.c.digest).in_(keys)
        )
    ).all()
    return {(row.kind, bytes(row.digest)): row.customer_id for row in rows}


def owner(connection: Connection, kind: IdentifierKind, digest: bytes) -> str | None:
    return connection.execute(
        select(_indexes.c.customer_id).where(_indexes.c.kind == kind.value, _indexes.c.digest == digest)
    ).scalar_one_or_none()


def insert_indexes(connection: Connection, customer_id: str, digests: Sequence[tuple[IdentifierKind, bytes]]) -> None:
    if digests:
        connection.execute(
            insert(_indexes), [{"kind": k.value, "digest": d, "customer_id": customer_id} for k, d in digests]
        )


def delete_indexes(connection: Connection, customer_id: str, kinds: Iterable[IdentifierKind]) -> None:
    connection.execute(
        delete(_indexes).where(_indexes.c.customer_id == customer_id, _indexes.c.kind.in_([k.value for k in kinds]))
    )


def get_idempotency(connection: Connection, key_digest: bytes) -> Row[Any] | None:
    return connection.execute(select(_idempotency).where(_idempotency.c.key_digest == key_digest)).first()


def insert_idempotency(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(_idempotency).values(values))
