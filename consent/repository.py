"""SQL for the consent ledger (append-only records) and its current-state table."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update

from consent.models import ConsentScope, GivenBy, Standing
from vault.storage.models import Base, ConsentRecordRow, ConsentStateRow

_records = Base.metadata.tables[ConsentRecordRow.__tablename__]
_state = Base.metadata.tables[ConsentStateRow.__tablename__]

_LAST_REVISION = select(func.max(_records.c.revision)).where(_records.c.customer_id == bindparam("id"))
_INSERT_RECORD = insert(_records)
_BY_REQUEST = select(_records).where(_records.c.request_key == bindparam("key"))
_HISTORY = (
    select(_records)
    .where(_records.c.customer_id == bindparam("id"), _records.c.revision > bindparam("after"))
    .order_by(_records.c.revision)
    .limit(bindparam("limit"))
)
_HISTORY_FOR = _HISTORY.where(_records.c.purpose == bindparam("purpose"))
_STATES = select(_state).where(_state.c.customer_id == bindparam("id"))
_GRANTED = select(_state.c.customer_id, _state.c.scope, _state.c.given_by).where(
    _state.c.customer_id.in_(bindparam("ids", expanding=True)),
    _state.c.purpose == bindparam("purpose"),
    _state.c.granted.is_(True),
)
_UPDATE_STATE = (
    update(_state)
    .where(
        _state.c.customer_id == bindparam("match_id"),
        _state.c.purpose == bindparam("match_purpose"),
        _state.c.scope == bindparam("match_scope"),
    )
    .values(
        granted=bindparam("granted"),
        given_by=bindparam("given_by"),
        revision=bindparam("revision"),
        update_time=bindparam("update_time"),
    )
)
_INSERT_STATE = insert(_state)

# The customers table's id column joined with a "has a current standard consent for :purpose" condition, for lists.
GRANTED_FOR_PURPOSE = (
    select(_state.c.customer_id)
    .where(
        _state.c.purpose == bindparam("consent_purpose"),
        _state.c.scope == ConsentScope.STANDARD.value,
        _state.c.granted.is_(True),
    )
    .scalar_subquery()
)


def next_revision(connection: Connection, customer_id: str) -> int:
    last = connection.execute(_LAST_REVISION, {"id": customer_id}).scalar_one_or_none()
    return (last or 0) + 1


def insert_record(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_INSERT_RECORD, values)


def record_by_request(connection: Connection, request_key: bytes) -> Row[Any] | None:
    return connection.execute(_BY_REQUEST, {"key": request_key}).first()


def set_state(connection: Connection, values: dict[str, Any]) -> None:
    """Upsert the current state of (customer, purpose, scope)."""
    match = {
        "match_id": values["customer_id"],
        "match_purpose": values["purpose"],
        "match_scope": values["scope"],
    }
    changed = {key: values[key] for key in ("granted", "given_by", "revision", "update_time")}
    if connection.execute(_UPDATE_STATE, {**match, **changed}).rowcount == 0:
        connection.execute(_INSERT_STATE, values)


def states(connection: Connection, customer_id: str) -> Sequence[Row[Any]]:
    return connection.execute(_STATES, {"id": customer_id}).all()


def standings(connection: Connection, customer_ids: Iterable[str], purpose: str) -> dict[str, Standing]:
    """Each customer's granted scopes under ``purpose`` (customers with none are absent)."""
    ids = list(customer_ids)
    if not ids:
        return {}
    found: dict[str, Standing] = {}
    for row in connection.execute(_GRANTED, {"ids": ids, "purpose": purpose}):
        found.setdefault(row.customer_id, Standing({})).granted[ConsentScope(row.scope)] = GivenBy(row.given_by)
    return found


def history(
    connection: Connection, customer_id: str, purpose: str, after_revision: int, limit: int
) -> Sequence[Row[Any]]:
    parameters = {"id": customer_id, "after": after_revision, "limit": limit}
    if purpose:
        return connection.execute(_HISTORY_FOR, {**parameters, "purpose": purpose}).all()
    return connection.execute(_HISTORY, parameters).all()


def sealed_evidence(connection: Connection, customer_id: str) -> Sequence[Any]:
    return connection.execute(
        select(_records.c.record_id, _records.c.revision, _records.c.evidence_ct).where(
            _records.c.customer_id == customer_id, _records.c.evidence_ct.is_not(None)
        )
    ).all()


def set_evidence(connection: Connection, customer_id: str, revision: int, sealed: bytes) -> None:
    """Re-sealing only (a re-key): the record's content is unchanged, so the ledger stays append-only in substance."""
    connection.execute(
        update(_records)
        .where(_records.c.customer_id == customer_id, _records.c.revision == revision)
        .values(evidence_ct=sealed)
    )


def lapse_subject_consents(connection: Connection, customer_id: str, now: Any) -> list[str]:
    """Withdraw, as the vault, every current consent the customer gave themselves: they are now known to be under 14,
    and only a guardian's consent counts (PIPL art. 31). Returns the purposes affected."""
    current = connection.execute(
        select(_state.c.purpose, _state.c.scope).where(
            _state.c.customer_id == customer_id, _state.c.granted.is_(True), _state.c.given_by == "subject"
        )
    ).all()
    revision = next_revision(connection, customer_id)
    for offset, row in enumerate(current):
        record = {
            "customer_id": customer_id,
            "revision": revision + offset,
            "record_id": str(uuid.uuid4()),
            "purpose": row.purpose,
            "scope": row.scope,
            "action": "withdraw",
            "given_by": "subject",
            "notice_version": "",
            "notice_sha256": None,
            "channel": "system",
            "actor": "system:age",
            "actor_role": "system",
            "evidence_ct": None,
            "record_time": now,
            "request_key": None,
            "request_digest": None,
        }
        insert_record(connection, record)
        state = {"granted": False, "given_by": "subject", "revision": revision + offset, "update_time": now}
        set_state(connection, {"customer_id": customer_id, "purpose": row.purpose, "scope": row.scope, **state})
    return sorted({row.purpose for row in current})
