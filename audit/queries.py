"""What auditors read: events by customer, principal, action, outcome and time, oldest first, by keyset pages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from audit.events import LIST_SEPARATOR, AuditEvent
from vault.storage.db import Database
from vault.storage.models import AuditEventRow, AuditSubjectRow

CHUNK = 500


@dataclass(frozen=True)
class EventFilter:
    customer_id: str = ""
    principal: str = ""
    action: str = ""
    outcome: str = ""
    start_us: int = 0
    end_us: int = 0


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=row.seq,
        time_us=row.time_us,
        principal=row.principal,
        role=row.role,
        action=row.action,
        customer_ids=tuple(row.customer_ids.split(LIST_SEPARATOR)) if row.customer_ids else (),
        fields=tuple(row.fields.split(LIST_SEPARATOR)) if row.fields else (),
        purpose=row.purpose,
        outcome=row.outcome,
        request_id=row.request_id,
        peer=row.peer,
        mac=bytes(row.mac),
    )


class AuditQueries:
    def __init__(self, database: Database) -> None:
        self._database = database

    def _select(self, where: EventFilter, after_seq: int, limit: int) -> Select[Any]:
        query = select(AuditEventRow.__table__).where(AuditEventRow.seq > after_seq)
        if where.customer_id:
            query = query.join(AuditSubjectRow, AuditSubjectRow.seq == AuditEventRow.seq).where(
                AuditSubjectRow.customer_id == where.customer_id
            )
        if where.principal:
            query = query.where(AuditEventRow.principal == where.principal)
        if where.action:
            query = query.where(AuditEventRow.action == where.action)
        if where.outcome:
            query = query.where(AuditEventRow.outcome == where.outcome)
        if where.start_us:
            query = query.where(AuditEventRow.time_us >= where.start_us)
        if where.end_us:
            query = query.where(AuditEventRow.time_us < where.end_us)
        return query.order_by(AuditEventRow.seq).limit(limit)

    def events(self, where: EventFilter, after_seq: int = 0, limit: int = 1000) -> Iterator[list[AuditEvent]]:
        """Matching events after ``after_seq``, at most ``limit``, in chunks (so a large answer streams)."""
        remaining = limit
        while remaining > 0:
            with self._database.read() as connection:
                rows = connection.execute(self._select(where, after_seq, min(CHUNK, remaining))).all()
            if not rows:
                return
            chunk = [_event(row) for row in rows]
            yield chunk
            after_seq = chunk[-1].seq
            remaining -= len(chunk)
            if len(chunk) < CHUNK:
                return
