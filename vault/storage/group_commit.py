"""Group commit: many concurrent write requests, one transaction.

A commit is the expensive part of a small write (a WAL append on SQLite, an fsync on PostgreSQL), so writes are
committed in groups. There is no writer thread: the caller that finds no commit in progress becomes the leader, takes
every request queued so far (its own included) and commits them together; callers that arrive meanwhile queue up, and
when the commit ends the first of them is woken to lead the next group. A lone caller therefore pays no thread
hand-off, a busy server batches naturally with no artificial delay, and every waiting caller is woken exactly once.

Each request first runs in the shared transaction without a savepoint (a savepoint per request measured as 40% of a
create's database time). If any request fails, the transaction is rolled back and the group is run again with a
savepoint per request, so a failing request (a unique key taken, a stale version) rolls back alone and gets its own
error while the others commit. Request functions must therefore only touch the database they are given.

``submit`` returns only after the commit that holds the work, so an acknowledged write is durable (to the database's
durability setting). If that commit fails, every request in the group gets the error and none of them was written.

A request may carry a *tail* (audit events): after the group's work, ``before_commit`` receives the tails of every
request that succeeded, in order, inside the same transaction (on the driver's side of the connection, see
``DriverTransaction``; a group of tails alone — reads' audit events — runs on the driver's connection throughout).
This is how a hash chain is extended once per group — one head lock, one multi-row insert — and how a write and its
audit event commit together or not at all.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.ddl import sort_tables

from vault.observability.metrics import GROUP_COMMIT_SIZE
from vault.storage.db import Database, DriverInsert, DriverTransaction

T = TypeVar("T")
MAX_BATCH = 128


@dataclass(frozen=True)
class Inserts:
    """A write made only of inserts. The leader merges the rows of every such request in a group into one
    multi-row insert per table, which measured several times cheaper than a statement per request."""

    rows: tuple[tuple[Table, tuple[dict[str, Any], ...]], ...]

    def __repr__(self) -> str:
        return f"Inserts(tables={[table.name for table, _ in self.rows]}, rows=[secure])"


@cache
def _insert(table: Table) -> DriverInsert:
    return DriverInsert(table)


def _execute_inserts(connection: Connection, groups: list[Inserts]) -> None:
    merged: dict[Table, list[dict[str, Any]]] = {}
    for group in groups:
        for table, rows in group.rows:
            merged.setdefault(table, []).extend(rows)
    transaction = DriverTransaction.of(connection)
    for table in _ordered(frozenset(merged)):
        _insert(table).execute(transaction, connection.dialect, merged[table])


@cache
def _ordered(tables: frozenset[Table]) -> list[Table]:
    """Parents before children, for foreign keys."""
    return sort_tables(tables)


@dataclass(eq=False)
class _Job(Generic[T]):
    work: Callable[[Connection], T] | Inserts | None
    tail: tuple[object, ...] = ()
    done: bool = False
    result: T | None = None
    error: BaseException | None = field(default=None)
    # Held from creation; released when the job is done or its submitter is to lead the next group. Each waiting
    # thread is woken once, by itself: waiters that all queue on one lock wake one another in turn after every commit.
    wake: threading.Lock = field(default_factory=threading.Lock)
    woken: bool = False  # ``wake`` was released (set under the committer's mutex, or by the leader of its group)
    promoted: bool = False  # woken to lead, not because it was done

    def __post_init__(self) -> None:
        self.wake.acquire()

    def finish(self) -> None:
        """Mark done and wake the submitter, once."""
        self.done = True
        if not self.woken:
            self.woken = True
            self.wake.release()


class GroupCommitter:
    def __init__(
        self,
        database: Database,
        max_batch: int = MAX_BATCH,
        before_commit: Callable[[DriverTransaction, list[object]], None] | None = None,
    ) -> None:
        self._database = database
        self._max_batch = max_batch
        self._before_commit = before_commit
        self._pending: deque[_Job[Any]] = deque()
        self._mutex = threading.Lock()  # guards _pending and _leading; never held during a commit
        self._leading = False  # a submitter is committing a group, or has been told to commit the next one
        self.batches = 0
        self.jobs = 0
        self._in_tail = False  # the leader is inside before_commit (set and read by the leader only)

    def submit(self, work: Callable[[Connection], T] | Inserts | None, tail: tuple[object, ...] = ()) -> T:
        """Run ``work`` (and hand ``tail`` to ``before_commit``) in the next group transaction; return its result
        once that transaction has committed."""
        job: _Job[T] = _Job(work, tail)
        with self._mutex:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
            job.promoted = job.woken = lead  # leadership is ours without waiting
        try:
            if not lead:
                job.wake.acquire()  # until the job is done, or its turn has come to lead
            if not job.done:
                self._lead()
        except BaseException:
            # Interrupted (KeyboardInterrupt, a signal handler's SystemExit) while waiting or leading: nobody may be
            # left waiting on a job of ours, nor on a leadership we held.
            self._abandon(job)
            raise
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Commit one group (the caller's job is in it), then hand leadership to the first job still waiting."""
        batch: list[_Job[Any]] = []
        try:
            with self._mutex:
                batch = self._take()
            self._commit(batch)
        finally:
            for job in batch:  # normally all finished by _commit already
                if not job.done:
                    job.error = job.error or RuntimeError("the group commit was interrupted")
                    job.finish()
            self._hand_over()

    def _hand_over(self) -> None:
        with self._mutex:
            if self._pending:
                successor = self._pending[0]  # not done: its submitter leads the next group
                successor.promoted = successor.woken = True
                successor.wake.release()
            else:
                self._leading = False

    def _abandon(self, job: _Job[Any]) -> None:
        with self._mutex:
            if job.done or job not in self._pending:
                return  # finished, or in a group being committed (its leader finishes it)
            self._pending.remove(job)
            promoted = job.promoted
        if promoted:  # leadership was ours and nobody else will take it up
            self._hand_over()

    def close(self) -> None:
        """Nothing to stop: there is no background thread."""

    def _take(self) -> list[_Job[Any]]:
        batch: list[_Job[Any]] = []
        while self._pending and len(batch) < self._max_batch:
            batch.append(self._pending.popleft())
        return batch

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            try:
                self._run(batch, isolated=False)
            except OperationalError:
                raise
            except Exception:  # one request failed: redo the group with a savepoint per request
                if self._in_tail:
                    # before_commit failed (the audit append: the database is failing), not one request: redoing
                    # the group would only fail again, after a second wait for the database.
                    raise
                self._run(batch, isolated=True)
        except BaseException as error:  # noqa: BLE001 - every caller in the group gets it
            for job in batch:
                job.result = None
                job.error = job.error or error
        self.batches += 1
        self.jobs += len(batch)
        GROUP_COMMIT_SIZE.observe(len(batch))
        for job in batch:
            job.finish()

    def _run(self, batch: list[_Job[Any]], *, isolated: bool) -> None:
        self._in_tail = False
        for job in batch:
            job.result, job.error = None, None
        if all(job.work is None for job in batch):
            # Audit events alone (reads, finds, refusals): a few fixed statements, on the driver's connection.
            with self._database.write_driver() as driver:
                self._finish(driver, batch)
            return
        with self._database.write() as connection:
            if not isolated:
                inserts: list[Inserts] = []
                for job in batch:
                    if isinstance(job.work, Inserts):
                        inserts.append(job.work)
                    elif job.work is not None:
                        job.result = job.work(connection)
                _execute_inserts(connection, inserts)
                self._finish(DriverTransaction.of(connection), batch)
                return
            for job in batch:
                savepoint = connection.begin_nested()
                try:
                    if isinstance(job.work, Inserts):
                        _execute_inserts(connection, [job.work])
                    elif job.work is not None:
                        job.result = job.work(connection)
                except OperationalError:
                    raise  # the connection or database is in trouble: fail the whole group
                except Exception as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                    savepoint.rollback()
                    job.error = error
                else:
                    savepoint.commit()
            self._finish(DriverTransaction.of(connection), batch)

    def _finish(self, transaction: DriverTransaction, batch: list[_Job[Any]]) -> None:
        if self._before_commit is None:
            return
        tails = [item for job in batch if job.error is None for item in job.tail]
        if tails:
            self._in_tail = True
            self._before_commit(transaction, tails)
            self._in_tail = False
