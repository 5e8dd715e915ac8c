"""Verifying the audit chain: recompute every MAC and compare the head and every signed checkpoint.

Detects an edited event (MAC mismatch at it), a deleted one (a gap), a forged or reordered one (MAC mismatch), and a
truncated tail (the events end before the head or a checkpoint). Reports the first bad sequence number and stops
there: past a break, later MACs prove nothing. Checkpoints signed by any key but ours count as forged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from audit.events import canonical
from audit.log import HEAD_ID, checkpoint_message
from vault.crypto import ChainMac, verify_signature
from vault.storage.db import Database
from vault.storage.models import AuditCheckpointRow, AuditEventRow, AuditHeadRow

PAGE = 20_000
GENESIS_MAC = bytes(32)


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_mac: bytes
    time_us: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class VerifyReport:
    intact: bool
    events_checked: int
    head_seq: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    problem: str = ""


Progress = Callable[[int, int], None]  # (events checked, events expected)

_e = AuditEventRow
_COLUMNS = (
    _e.seq,
    _e.time_us,
    _e.principal,
    _e.role,
    _e.action,
    _e.customer_ids,
    _e.fields,
    _e.purpose,
    _e.outcome,
    _e.request_id,
    _e.peer,
    _e.mac,
)


class ChainVerifier:
    def __init__(self, database: Database, chain: ChainMac, public_key: bytes) -> None:
        self._database = database
        self._chain = chain
        self._public_key = public_key

    def checkpoints(self) -> list[Checkpoint]:
        with self._database.read() as connection:
            rows = connection.execute(select(AuditCheckpointRow.__table__).order_by(AuditCheckpointRow.seq)).all()
        return [Checkpoint(r.seq, bytes(r.head_mac), r.time_us, bytes(r.public_key), bytes(r.signature)) for r in rows]

    def _pages(self) -> Iterator[Sequence[tuple[object, ...]]]:
        after = 0
        while True:
            with self._database.read() as connection:
                rows = connection.execute(select(*_COLUMNS).where(_e.seq > after).order_by(_e.seq).limit(PAGE)).all()
            if not rows:
                return
            yield [tuple(row) for row in rows]
            after = int(rows[-1][0])

    def verify(self, extra_checkpoints: Sequence[Checkpoint] = (), progress: Progress | None = None) -> VerifyReport:
        with self._database.read() as connection:
            head = connection.execute(
                select(AuditHeadRow.seq, AuditHeadRow.mac).where(AuditHeadRow.id == HEAD_ID)
            ).one()
        head_seq, head_mac = int(head.seq), bytes(head.mac)
        checkpoints = [*self.checkpoints(), *extra_checkpoints]
        for checkpoint in checkpoints:
            message = checkpoint_message(checkpoint.seq, checkpoint.head_mac, checkpoint.time_us)
            if checkpoint.public_key != self._public_key or not verify_signature(
                self._public_key, message, checkpoint.signature
            ):
                return VerifyReport(False, 0, head_seq, 0, checkpoint.seq, "checkpoint signature is not valid")
        wanted = {c.seq: c.head_mac for c in checkpoints}
        link = self._chain.link
        expected = 1
        mac = GENESIS_MAC
        seen_checkpoints = 0
        for page in self._pages():
            for row in page:
                seq = row[0]
                if seq != expected:
                    return VerifyReport(False, expected - 1, head_seq, seen_checkpoints, expected, "event missing")
                mac = link(mac, canonical(*row[:11]))  # type: ignore[arg-type]
                if mac != row[11]:
                    return VerifyReport(False, expected - 1, head_seq, seen_checkpoints, expected, "MAC mismatch")
                if expected in wanted:
                    if wanted[expected] != mac:
                        return VerifyReport(
                            False, expected, head_seq, seen_checkpoints, expected, "checkpoint does not match"
                        )
                    seen_checkpoints += 1
                expected += 1
            if progress is not None:
                progress(expected - 1, head_seq)
        last = expected - 1
        beyond = [seq for seq in wanted if seq > last]
        if last < head_seq or beyond:
            return VerifyReport(False, last, head_seq, seen_checkpoints, last + 1, "events missing at the end")
        if last > head_seq:
            return VerifyReport(False, last, head_seq, seen_checkpoints, head_seq + 1, "events beyond the head")
        if last and mac != head_mac:
            return VerifyReport(False, last, head_seq, seen_checkpoints, last, "head does not match")
        return VerifyReport(True, last, head_seq, seen_checkpoints)
