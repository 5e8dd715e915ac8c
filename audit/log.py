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

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from audit.events import LIST_SEPARATOR, AuditDraft, canonical
from vault.crypto import ChainMac, Signer
from vault.errors import Unavailable
from vault.storage.group_commit import GroupCommitter
from vault.storage.models import AuditCheckpointRow, AuditEventRow, AuditHeadRow, AuditSubjectRow

HEAD_ID = 1
CHECKPOINT_EVERY = 1000
CHECKPOINT_SECONDS = 60.0

_insert_events = insert(AuditEventRow)
_insert_subjects = insert(AuditSubjectRow)
_update_head = update(AuditHeadRow).where(AuditHeadRow.id == HEAD_ID)


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

    def append(self, connection: Connection, items: Sequence[object]) -> None:
        """Extend the chain with ``items`` (AuditDrafts) inside ``connection``'s transaction."""
        drafts = [item for item in items if isinstance(item, AuditDraft)]
        if not drafts:
            return
        head = connection.execute(
            select(AuditHeadRow.seq, AuditHeadRow.mac).where(AuditHeadRow.id == HEAD_ID).with_for_update()
        ).one()
        seq, mac = int(head.seq), bytes(head.mac)
        first_seq = seq
        time_us = self._clock_us()
        events: list[dict[str, object]] = []
        subjects: list[dict[str, object]] = []
        for draft in drafts:
            seq += 1
            customer_ids = LIST_SEPARATOR.join(draft.customer_ids)
            fields = LIST_SEPARATOR.join(draft.fields)
            mac = self._chain.link(
                mac,
                canonical(
                    seq,
                    time_us,
                    draft.principal,
                    draft.role,
                    draft.action,
                    customer_ids,
                    fields,
                    draft.purpose,
                    draft.outcome,
                    draft.request_id,
                    draft.peer,
                ),
            )
            events.append(
                {
                    "seq": seq,
                    "time_us": time_us,
                    "principal": draft.principal,
                    "role": draft.role,
                    "action": draft.action,
                    "customer_ids": customer_ids,
                    "fields": fields,
                    "purpose": draft.purpose,
                    "outcome": draft.outcome,
                    "request_id": draft.request_id,
                    "peer": draft.peer,
                    "mac": mac,
                }
            )
            subjects.extend({"customer_id": cid, "seq": seq} for cid in dict.fromkeys(draft.customer_ids))
        connection.execute(_insert_events, events)
        if subjects:
            connection.execute(_insert_subjects, subjects)
        connection.execute(_update_head, {"seq": seq, "mac": mac})
        crossed = seq // self._checkpoint_every > first_seq // self._checkpoint_every
        if crossed or time_us - self._last_checkpoint_us >= self._checkpoint_us:
            self._write_checkpoint(connection, seq, mac, time_us)

    def _write_checkpoint(self, connection: Connection, seq: int, head_mac: bytes, time_us: int) -> None:
        signature = self._signer.sign(checkpoint_message(seq, head_mac, time_us))
        connection.execute(
            insert(AuditCheckpointRow).values(
                seq=seq, head_mac=head_mac, time_us=time_us, public_key=self._signer.public_key, signature=signature
            )
        )
        self._last_checkpoint_us = time_us

    def checkpoint_now(self) -> None:
        """Sign the current head (on demand, e.g. before an auditor fetches it)."""
        assert self._writer is not None

        def sign(connection: Connection) -> None:
            head = connection.execute(
                select(AuditHeadRow.seq, AuditHeadRow.mac).where(AuditHeadRow.id == HEAD_ID).with_for_update()
            ).one()
            exists = connection.execute(
                select(AuditCheckpointRow.seq).where(AuditCheckpointRow.seq == head.seq)
            ).first()
            if exists is None and head.seq > 0:
                self._write_checkpoint(connection, int(head.seq), bytes(head.mac), self._clock_us())

        self._writer.submit(sign)
