"""Appending to the audit chain.

Every append runs inside a database transaction that also holds the change being audited (writes) or nothing else
(reads, which commit their event before any data is returned). The chain head is one row, locked for the duration
of the append (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock does the same), so any number of server
processes on one database extend one gap-free chain: ``mac_i = HMAC(k, mac_{i-1} || canonical(event_i))``.
Group commit hands ``append`` a whole batch, so the head is read and written once per batch, not once per event.

Checkpoints — an Ed25519 signature over (seq, head MAC, time) — are written every ``checkpoint_every`` events and at
least every ``checkpoint_seconds``; they let a verifier detect a truncated tail even though the head row, too, sits in
the database an attacker may control.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from audit.events import LIST_SEPARATOR, AuditDraft, canonical
from vault.crypto import ChainMac, Signer
from vault.errors import Unavailable
from vault.storage.db import DriverTransaction, placeholder
from vault.storage.group_commit import GroupCommitter
from vault.storage.models import AuditCheckpointRow, AuditHeadRow

HEAD_ID = 1
CHECKPOINT_EVERY = 1000
CHECKPOINT_SECONDS = 60.0

_lock_head = select(AuditHeadRow.seq, AuditHeadRow.mac).where(AuditHeadRow.id == HEAD_ID).with_for_update()
# Rows per INSERT: a group commit's batch (128) in one statement, 12 × 128 values well under SQLite's limit (32,766).
_ROWS_PER_STATEMENT = 128
_EVENT_COLUMNS = "seq, time_us, principal, role, action, customer_ids, fields, purpose, outcome, request_id, peer, mac"


@dataclass(frozen=True)
class _Sql:
    lock_head: str
    update_head: str
    insert_checkpoint: str


@cache
def _sql_for(dialect: str) -> _Sql:
    mark = placeholder(dialect)
    # SQLite has no row locks; its write lock, taken by BEGIN IMMEDIATE, already serialises appends.
    lock = "" if dialect == "sqlite" else " FOR UPDATE"
    # Every interpolated piece is a constant of this module, never input.
    return _Sql(
        lock_head=f"SELECT seq, mac FROM audit_head WHERE id = {HEAD_ID}{lock}",  # noqa: S608
        update_head=f"UPDATE audit_head SET seq = {mark}, mac = {mark} WHERE id = {HEAD_ID}",  # noqa: S608
        insert_checkpoint=(
            "INSERT INTO audit_checkpoints (seq, head_mac, time_us, public_key, signature) "  # noqa: S608
            f"VALUES ({', '.join([mark] * 5)})"
        ),
    )


@cache
def _insert_rows(dialect: str, table: str, columns: str, width: int, count: int) -> str:
    """An INSERT of ``count`` rows of ``width`` values (every piece a constant of this module)."""
    row = f"({', '.join([placeholder(dialect)] * width)})"
    return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * count)}"  # noqa: S608


def _insert(cursor: Any, dialect: str, table: str, columns: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows``. On SQLite, one multi-row statement per 128 rows, not an executemany: sqlite3 runs an
    executemany as a step per row and lets go of the GIL around every step, so under load each row meant a hand-over
    to another request thread and back. On PostgreSQL, psycopg's executemany (pipelined, one round trip) of one
    statement: a statement per batch size would churn psycopg's prepared statements (at most 100 per connection)."""
    if not rows:
        return
    width = len(rows[0])
    if dialect != "sqlite":
        cursor.executemany(_insert_rows(dialect, table, columns, width, 1), rows)
        return
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        statement = _insert_rows(dialect, table, columns, width, len(chunk))
        cursor.execute(statement, [value for row in chunk for value in row])


def checkpoint_message(seq: int, head_mac: bytes, time_us: int) -> bytes:
    return b"piivault-audit-checkpoint/v1\x00" + f"{seq}\x00{time_us}\x00".encode() + head_mac


def now_us() -> int:
    return time.time_ns() // 1000


class AuditLog:
    def __init__(
        self,
        chain: ChainMac,
        signer: Signer,
        clock_us: Callable[[], int] = now_us,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self._chain = chain
        self._signer = signer
        self._clock_us = clock_us
        self._checkpoint_every = checkpoint_every
        self._checkpoint_us = int(checkpoint_seconds * 1_000_000)
        self._last_checkpoint_us = clock_us()
        self._writer: GroupCommitter | None = None

    def __repr__(self) -> str:
        return "AuditLog(keys=[secure])"

    def attach(self, writer: GroupCommitter) -> None:
        self._writer = writer

    def record(self, *drafts: AuditDraft) -> None:
        """Commit ``drafts`` now (reads, denied calls); fail closed: ``Unavailable`` if they cannot be written."""
        assert self._writer is not None, "attach() the group committer first"
        try:
            self._writer.submit(None, tuple(drafts))
        except SQLAlchemyError:
            raise Unavailable() from None

    def append(self, transaction: DriverTransaction, items: Sequence[object]) -> None:
        """Extend the chain with ``items`` (AuditDrafts) inside ``transaction``."""
        drafts = [item for item in items if isinstance(item, AuditDraft)]
        if not drafts:
            return
        dialect = transaction.dialect
        sql = _sql_for(dialect)
        # The driver's cursor, not SQLAlchemy statements: this runs for every read, and four compiled statements
        # measured as three quarters of an audit append's cost. Same transaction, same connection.
        cursor = None
        try:
            cursor = transaction.connection.cursor()
            cursor.execute(sql.lock_head)
            seq, mac = cursor.fetchone()
            seq, mac = int(seq), bytes(mac)
            first_seq = seq
            time_us = self._clock_us()
            events: list[tuple[object, ...]] = []
            subjects: list[tuple[str, int]] = []
            for draft in drafts:
                seq += 1
                values = (
                    seq,
                    time_us,
                    draft.principal,
                    draft.role,
                    draft.action,
                    LIST_SEPARATOR.join(draft.customer_ids),
                    LIST_SEPARATOR.join(draft.fields),
                    draft.purpose,
                    draft.outcome,
                    draft.request_id,
                    draft.peer,
                )
                mac = self._chain.link(mac, canonical(*values))
                events.append((*values, mac))
                subjects.extend((cid, seq) for cid in dict.fromkeys(draft.customer_ids))
            _insert(cursor, dialect, "audit_events", _EVENT_COLUMNS, events)
            _insert(cursor, dialect, "audit_subjects", "customer_id, seq", subjects)
            cursor.execute(sql.update_head, (seq, mac))
            crossed = seq // self._checkpoint_every > first_seq // self._checkpoint_every
            if crossed or time_us - self._last_checkpoint_us >= self._checkpoint_us:
                self._write_checkpoint(cursor, sql, seq, mac, time_us)
        except transaction.error:
            # Fail closed, and with a fixed message: the driver's own text can quote the statement's values.
            raise Unavailable() from None
        finally:
            if cursor is not None:
                cursor.close()

    def _write_checkpoint(self, cursor: Any, sql: _Sql, seq: int, head_mac: bytes, time_us: int) -> None:
        signature = self._signer.sign(checkpoint_message(seq, head_mac, time_us))
        cursor.execute(sql.insert_checkpoint, (seq, head_mac, time_us, self._signer.public_key, signature))
        self._last_checkpoint_us = time_us

    def checkpoint_now(self) -> None:
        """Sign the current head (on demand, e.g. before an auditor fetches it)."""
        assert self._writer is not None

        def sign(connection: Connection) -> None:
            head = connection.execute(_lock_head).one()
            exists = connection.execute(
                select(AuditCheckpointRow.seq).where(AuditCheckpointRow.seq == head.seq)
            ).first()
            if exists is None and head.seq > 0:
                transaction = DriverTransaction.of(connection)
                with closing(transaction.connection.cursor()) as cursor:
                    sql = _sql_for(transaction.dialect)
                    self._write_checkpoint(cursor, sql, int(head.seq), bytes(head.mac), self._clock_us())

        self._writer.submit(sign)
