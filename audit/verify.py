"""Verifying the audit chain: recompute every MAC and compare the head and every signed checkpoint.

Detects an edited event (MAC mismatch at it), a deleted one (a gap), a forged or reordered one (MAC mismatch), and a
truncated tail (the events end before the head or a checkpoint), and reports the first bad sequence number.
Checkpoints signed by any key but ours count as forged.

Every event stores its own MAC, so each link ``mac_i == HMAC(k, mac_{i-1} || canonical_i)`` can be checked on its
own; if every link holds, the whole chain does. Long chains are therefore split into ranges checked by several
processes at once (verification is CPU-bound: one core measured about 150,000 events/s here).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from audit.events import CANONICAL_FORMAT
from audit.log import HEAD_ID, checkpoint_message
from vault.crypto import ChainMac, SecretKey, verify_signature
from vault.storage.db import Database
from vault.storage.models import AuditCheckpointRow, AuditEventRow, AuditHeadRow

PAGE = 20_000
PARALLEL_THRESHOLD = 200_000  # below this, starting worker processes costs more than it saves
HEAD_START = 120_000  # events one process checks while a worker process starts (about 0.8 s here)
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
    def __init__(self, database: Database, chain: ChainMac, public_key: bytes, chain_key: bytes = b"") -> None:
        self._database = database
        self._chain = chain
        self._public_key = public_key
        self._chain_key = chain_key  # for worker processes; empty means verify in this process only

    def checkpoints(self, connection: Connection | None = None) -> list[Checkpoint]:
        if connection is None:
            with self._database.read() as fresh:
                return self.checkpoints(fresh)
        rows = connection.execute(select(AuditCheckpointRow.__table__).order_by(AuditCheckpointRow.seq)).all()
        return [Checkpoint(r.seq, bytes(r.head_mac), r.time_us, bytes(r.public_key), bytes(r.signature)) for r in rows]

    def verify(
        self,
        extra_checkpoints: Sequence[Checkpoint] = (),
        progress: Progress | None = None,
        workers: int = 1,
    ) -> VerifyReport:
        # Head, highest event and checkpoints from one snapshot: read separately, events appended in between by a live
        # service would look like tampering. Events are never rewritten, so pages read later up to ``highest`` agree.
        with self._database.snapshot() as connection:
            head = connection.execute(
                select(AuditHeadRow.seq, AuditHeadRow.mac).where(AuditHeadRow.id == HEAD_ID)
            ).one()
            highest = int(connection.execute(select(func.coalesce(func.max(AuditEventRow.seq), 0))).scalar_one())
            stored_checkpoints = self.checkpoints(connection)
        head_seq, head_mac = int(head.seq), bytes(head.mac)
        checkpoints = [*stored_checkpoints, *extra_checkpoints]
        for checkpoint in checkpoints:
            message = checkpoint_message(checkpoint.seq, checkpoint.head_mac, checkpoint.time_us)
            if checkpoint.public_key != self._public_key or not verify_signature(
                self._public_key, message, checkpoint.signature
            ):
                return VerifyReport(False, 0, head_seq, 0, checkpoint.seq, "checkpoint signature is not valid")

        ranges = _split(highest, workers if self._chain_key and highest >= PARALLEL_THRESHOLD else 1)
        if len(ranges) == 1:
            results = [_check_range(self._database, self._chain, 1, highest, progress)]
        else:
            # This process checks the first range itself while fresh worker processes start up for the others, so
            # the first range is the longest (by what one process checks during a worker's start-up).
            url = self._database.engine.url.render_as_string(hide_password=False)
            context = multiprocessing.get_context("spawn")
            with context.Pool(len(ranges) - 1) as pool:
                others = pool.starmap_async(
                    _check_range_in_worker, [(url, self._chain_key, a, b) for a, b in ranges[1:]]
                )
                checked_here = _check_range(self._database, self._chain, *ranges[0])
                results = [checked_here, *others.get()]
            if progress is not None:
                progress(highest, head_seq)
        problems = [(r.first_bad, r.problem) for r in results if r.first_bad is not None]
        last = highest if not problems else min(seq for seq, _ in problems) - 1
        stored = self._stored_macs([c.seq for c in checkpoints if c.seq <= highest] + [head_seq])
        for checkpoint in checkpoints:
            if checkpoint.seq > highest:
                problems.append((highest + 1, "events missing at the end"))
            elif stored.get(checkpoint.seq) != checkpoint.head_mac:
                problems.append((checkpoint.seq, "checkpoint does not match"))
        if highest < head_seq:
            problems.append((highest + 1, "events missing at the end"))
        elif highest > head_seq:
            problems.append((head_seq + 1, "events beyond the head"))
        elif head_seq and stored.get(head_seq) != head_mac:
            problems.append((head_seq, "head does not match"))
        matched = sum(1 for c in checkpoints if c.seq <= highest and stored.get(c.seq) == c.head_mac)
        if problems:
            first, problem = min(problems)
            return VerifyReport(False, min(last, first - 1), head_seq, matched, first, problem)
        return VerifyReport(True, highest, head_seq, matched)

    def _stored_macs(self, seqs: list[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        with self._database.read() as connection:
            rows = connection.execute(
                select(AuditEventRow.seq, AuditEventRow.mac).where(AuditEventRow.seq.in_(sorted(set(seqs))))
            ).all()
        return {int(row.seq): bytes(row.mac) for row in rows}


@dataclass(frozen=True)
class _RangeResult:
    first_bad: int | None
    problem: str
    checked: int


def _split(highest: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges covering 1..highest; the first is longer by ``HEAD_START`` events (see ``verify``)."""
    if highest == 0 or parts <= 1:
        return [(1, highest)]
    head_start = min(HEAD_START, highest // (2 * parts))
    size = -(-(highest - head_start) // parts)
    ranges = [(1, min(highest, size + head_start))]
    while ranges[-1][1] < highest:
        start = ranges[-1][1] + 1
        ranges.append((start, min(highest, start + size - 1)))
    return ranges


def _pages(database: Database, start: int, end: int) -> Iterator[list[tuple[Any, ...]]]:
    """Events ``start-1 .. end`` in sequence order, as plain tuples from the driver's cursor.

    Verification is a tight loop over millions of rows, so it reads through the DBAPI cursor directly (plain tuples,
    no result-row objects): that measured several times faster than going through SQLAlchemy rows.
    """
    after = start - 2
    columns = ", ".join(column.name for column in _COLUMNS)
    while True:
        # Every interpolated value is an integer computed here, never input.
        sql = (
            f"SELECT {columns} FROM audit_events WHERE seq > {after} AND seq <= {end} "  # noqa: S608
            f"ORDER BY seq LIMIT {PAGE}"
        )
        with database.read() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql)
                rows: list[tuple[Any, ...]] = cursor.fetchall()
            finally:
                cursor.close()
        if not rows:
            return
        yield rows
        after = int(rows[-1][0])


def _check_range(
    database: Database, chain: ChainMac, start: int, end: int, progress: Progress | None = None
) -> _RangeResult:
    """Check every link from ``start`` to ``end``; the event before ``start`` supplies the previous MAC."""
    link = chain.link
    form = CANONICAL_FORMAT
    expected = start
    previous: bytes | None = GENESIS_MAC if start == 1 else None
    for page in _pages(database, start, end):
        for row in page:
            seq = row[0]
            if seq == start - 1:
                previous = bytes(row[11])
                continue
            if seq != expected:
                return _RangeResult(expected, "event missing", expected - start)
            stored = row[11]
            # Without the event before this range (it is missing, and its own range reports that), the first link
            # cannot be checked; every later one still can. The format is ``canonical`` inlined: this loop runs
            # once per event.
            if previous is not None and link(previous, (form % row[:11]).encode()) != stored:
                return _RangeResult(expected, "MAC mismatch", expected - start)
            previous = stored
            expected += 1
        if progress is not None:
            progress(expected - 1, end)
    if expected <= end:
        return _RangeResult(expected, "event missing", expected - start)
    return _RangeResult(None, "", expected - start)


def _check_range_in_worker(url: str, chain_key: bytes, start: int, end: int) -> _RangeResult:
    database = Database.from_url(url)
    try:
        return _check_range(database, ChainMac(SecretKey(chain_key)), start, end)
    finally:
        database.dispose()
