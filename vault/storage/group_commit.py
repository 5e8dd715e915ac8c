"""Group commit: one writer thread turns many concurrent write requests into one transaction.

A commit is the expensive part of a small write (a WAL append on SQLite, an fsync on PostgreSQL), so the writer takes
every request already queued — no artificial delay — and commits them together. Each request runs inside its own
savepoint: a request that fails (a unique key taken, a stale version) rolls back alone and gets its own error, while
the others commit. A caller's ``submit`` returns only after the commit that holds its work, so an acknowledged write
is durable (to the database's durability setting); if that commit fails, every request in the batch gets the error
and nothing of any of them was written.

The single writer is also the natural place to serialise anything that must be ordered, such as a hash chain.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from vault.storage.db import Database

T = TypeVar("T")
MAX_BATCH = 64


@dataclass(eq=False)
class _Job(Generic[T]):
    work: Callable[[Connection], T]
    done: threading.Event = field(default_factory=threading.Event)
    result: T | None = None
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, database: Database, max_batch: int = MAX_BATCH) -> None:
        self._database = database
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        self.batches = 0
        self.jobs = 0

    def submit(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a savepoint of the next group transaction; return its result once committed."""
        job: _Job[T] = _Job(work)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with self._database.write() as connection:
                for job in batch:
                    savepoint = connection.begin_nested()
                    try:
                        job.result = job.work(connection)
                    except OperationalError:
                        raise  # the connection or database is in trouble: fail the whole batch
                    except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                        savepoint.rollback()
                        job.error = error
                    else:
                        savepoint.commit()
        except BaseException as error:  # noqa: BLE001 - every waiting caller gets it; the writer must survive
            for job in batch:
                job.result = None
                job.error = job.error or error
        self.batches += 1
        self.jobs += len(batch)
        for job in batch:
            job.done.set()
