"""Group commit: batches commit together, a failing request rolls back alone, a failed commit fails everyone."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Column, Connection, ForeignKey, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import IntegrityError

from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter, Inserts, _Job

_metadata = MetaData()
_items = Table("gc_items", _metadata, Column("id", Integer, primary_key=True), Column("label", String(20)))
_children = Table(
    "gc_children",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("gc_items.id", deferrable=True, initially="DEFERRED")),
)


@pytest.fixture
def items(database: Database) -> Database:
    _metadata.create_all(database.engine)
    return database


def _count(database: Database) -> int:
    with database.read() as connection:
        return int(connection.execute(select(func.count()).select_from(_items)).scalar_one())


def test_concurrent_inserts_commit_in_groups_and_a_duplicate_fails_alone(items: Database) -> None:
    committer = GroupCommitter(items)
    start = threading.Barrier(40)

    def submit(n: int) -> str:
        start.wait()
        key = 7 if n in (3, 4) else 100 + n  # two requests race for id 7: exactly one may win
        try:
            committer.submit(Inserts(((_items, ({"id": key, "label": f"r{n}"},)),)))
            return "ok"
        except IntegrityError:
            return "duplicate"

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(submit, range(40)))
    assert outcomes.count("duplicate") == 1
    assert _count(items) == 39
    assert committer.jobs == 40


def test_callable_work_returns_its_result_and_errors_are_the_callers_own(items: Database) -> None:
    committer = GroupCommitter(items)

    def add(connection: Connection) -> int:
        connection.execute(insert(_items).values(id=1, label="one"))
        return 1

    def refuse(connection: Connection) -> None:
        connection.execute(insert(_items).values(id=2, label="two"))
        raise LookupError("domain rule broken")

    assert committer.submit(add) == 1
    with pytest.raises(LookupError):
        committer.submit(refuse)
    with items.read() as connection:
        labels = connection.execute(select(_items.c.label)).scalars().all()
    assert labels == ["one"]  # the refused request's insert was rolled back


def test_a_failed_commit_fails_every_request_in_the_group(items: Database) -> None:
    committer = GroupCommitter(items)
    good: _Job[None] = _Job(Inserts(((_items, ({"id": 10, "label": "good"},)),)))
    # The orphan's foreign key is checked only at COMMIT (deferred), so the whole group's commit fails.
    orphan: _Job[None] = _Job(Inserts(((_children, ({"id": 1, "item_id": 999},)),)))
    committer._commit([good, orphan])
    assert good.done and orphan.done
    assert isinstance(good.error, IntegrityError)
    assert isinstance(orphan.error, IntegrityError)
    assert _count(items) == 0


def test_leadership_passes_on_under_sustained_load_and_each_caller_gets_its_own_result(items: Database) -> None:
    """16 threads submitting back to back for a while: every call returns its own result (none is lost while the
    leader hands over to a waiting caller, none waits forever), and the groups really were shared."""
    committer = GroupCommitter(items)
    calls_per_thread = 60

    def caller(thread: int) -> list[int]:
        results = []
        for n in range(calls_per_thread):
            key = thread * 1000 + n

            def work(connection: Connection, key: int = key) -> int:
                connection.execute(insert(_items).values(id=key, label="x"))
                return key

            results.append(committer.submit(work))
        return results

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(caller, thread) for thread in range(16)]
        answers = [future.result(timeout=120) for future in futures]
    assert answers == [[thread * 1000 + n for n in range(calls_per_thread)] for thread in range(16)]
    assert _count(items) == 16 * calls_per_thread
    assert committer.jobs == 16 * calls_per_thread and committer.batches < committer.jobs


def test_a_caller_interrupted_while_waiting_leaves_nobody_stuck(items: Database) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) while the main thread waits for a group: the group being
    committed finishes, and later callers are not left waiting for a leader that is gone."""
    committer = GroupCommitter(items)
    inside = threading.Event()

    def slow(connection: Connection) -> str:
        inside.set()
        time.sleep(0.6)
        return "slow"

    def in_background(work: Callable[[Connection], str]) -> queue.Queue[str]:
        answer: queue.Queue[str] = queue.Queue()
        # A daemon thread: if a broken committer leaves it waiting for ever, the test still fails and ends.
        threading.Thread(target=lambda: answer.put(committer.submit(work)), daemon=True).start()
        return answer

    first = in_background(slow)
    assert inside.wait(10)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        committer.submit(lambda connection: "interrupted")
    assert first.get(timeout=10) == "slow"
    assert in_background(lambda connection: "later").get(timeout=10) == "later"
