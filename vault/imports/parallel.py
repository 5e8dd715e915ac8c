"""Importing a large channel file on every core.

The import is CPU-bound Python (canonicalising, encrypting, building rows), and one process uses one core. Here the
file's rows go in blocks to worker processes; each worker opens the vault itself (its own database connections, its
own copy of the keys) and runs the same ``ImportService`` as a sequential import, so every row gets the same checks,
merges, audit events and report line.

What keeps the outcome that of a sequential import:

- Rows that share an identifier are imported by one worker, in file order. For customers the identifiers are the
  canonical ones (mobile, email, national id, member id, external ref), so a person written several ways in the file
  is merged in memory exactly as the sequential import merges them. For purchases they are the order id and the
  order a return names, so a return always follows its order.
- The file is dealt in blocks. Within a block, rows joined by shared identifiers (transitively) form a group. A group
  goes to the worker that was sent an earlier row with one of its identifiers, else to the least busy one. A group
  whose identifiers went to two different workers waits until every row sent so far is imported; after such a wait
  any worker may take anything. So no row overtakes an earlier row it shares an identifier with, and otherwise the
  workers never wait for one another.
- Two rows with no identifier in common can still match one stored customer (one by mobile, the other by email).
  Their merges into it are serialised by the customer's version (a merge that lost the race reads the customer again
  and retries), so both are applied, as in a sequential import. Only when both fill the same empty field with
  different values does the first to commit keep it, where a sequential import would keep the earlier row's; the
  other row reports the field as a conflict either way.

The main process reads the file, canonicalises the customer rows (rejecting invalid ones itself), deals them and
collects the report. Workers are forked before the main process opens the vault or starts a thread, so they inherit
no lock and no database connection; this needs the ``fork`` start method, so on other systems than Linux the import
runs in one process. A worker that fails stops the import with ``ImportWorkerFailed`` naming only the error's type;
what was imported before stays, and importing the file again is safe (customers merge, purchases are idempotent).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from itertools import islice
from multiprocessing.queues import Queue
from typing import Any

from audit.events import Caller
from vault.config import Settings
from vault.customers.models import ExternalRef, Gender, Profile
from vault.errors import InvalidArgument
from vault.imports.service import ImportService, ImportSummary, RowResult, profile_of_row

MIN_ROWS = 2_000  # fewer rows than this run in one process: starting the workers would cost more than it saves
BLOCK_ROWS = 4_000  # rows grouped and dealt at a time
MAX_QUEUED_ROWS = 3 * BLOCK_ROWS  # sent and not yet imported: enough that no worker waits for the next block
PARENT_CHECK_SECONDS = 1.0  # how often an idle worker checks that the main process is still there
MAX_REMEMBERED = 1_000_000  # identifiers remembered with their worker before waiting for all (memory bound)

Rows = Iterable[tuple[int, dict[str, str]]]
Packed = tuple[Any, ...]  # a canonical profile as plain values, cheap to pickle


class ImportWorkerFailed(Exception):
    """A worker stopped on an error; the message names its type only (a message could carry a value)."""


def usable_jobs(requested: int) -> int:
    """Worker processes to use: ``requested``, or the cores this process may run on if 0; 1 where fork is missing."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return requested if requested > 0 else len(os.sched_getaffinity(0))


def pack(profile: Profile) -> Packed:
    return (
        profile.name,
        profile.mobile,
        profile.email,
        profile.national_id,
        profile.birth_date,
        profile.gender.value,
        profile.address,
        profile.member_id,
        tuple((ref.source, ref.id) for ref in profile.external_refs),
    )


def unpack(packed: Packed) -> Profile:
    name, mobile, email, national_id, birth_date, gender, address, member_id, refs = packed
    return Profile(
        name=name,
        mobile=mobile,
        email=email,
        national_id=national_id,
        birth_date=birth_date,
        gender=Gender(gender),
        address=address,
        member_id=member_id,
        external_refs=tuple(ExternalRef(source, id_) for source, id_ in refs),
    )


def groups(keys: Sequence[Iterable[Hashable]]) -> list[list[int]]:
    """Indices of ``keys`` joined when they share a key (transitively), each group in ascending order."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[Hashable, int] = {}
    for index, row_keys in enumerate(keys):
        for key in row_keys:
            other = first.setdefault(key, index)
            if other != index:
                a, b = root(index), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    joined: dict[int, list[int]] = {}
    for index in range(len(keys)):
        joined.setdefault(root(index), []).append(index)
    return list(joined.values())


def _work(
    inbox: Queue[Any],
    outbox: Queue[Any],
    worker: int,
    parent: int,
    settings: Settings,
    caller: Caller,
    kind: str,
    source: str,
) -> None:
    """A worker: open the vault, import each part of the file it is sent, answer with the part's report lines.
    ``parent``: the main process's pid, taken before the fork (it may be gone before the worker first looks)."""
    from vault.app import Vault

    try:
        vault = Vault.open(settings)
    except Exception as error:  # noqa: BLE001 - reported by type to the main process, which fails the import
        outbox.put(("failed", worker, type(error).__name__))
        return
    try:
        service = ImportService(vault.customers, vault.purchases)
        resolved: dict[tuple[str, ...], Any] = {}  # purchases: the customers earlier parts named
        while (part := _next_part(inbox, parent)) is not None:
            if kind == "customers":
                summary = service.profiles(caller, [(number, _constant(unpack(p))) for number, p in part])
            else:
                summary = service.purchases(caller, source, part, resolved)
            outbox.put(("done", worker, len(part), [_plain(result) for result in summary.results], summary.counts))
    except Exception as error:  # noqa: BLE001 - as above
        outbox.put(("failed", worker, type(error).__name__))
    finally:
        vault.close()


def _next_part(inbox: Queue[Any], parent: int) -> Any:
    """The next part of the file, or None when there is none: the main process said so, or it is gone (killed: a
    worker holds the queue's other end too, so it would otherwise wait forever with the vault open)."""
    while True:
        try:
            return inbox.get(timeout=PARENT_CHECK_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:
                return None


def _plain(r: RowResult) -> tuple[Any, ...]:
    """A report line as plain values (``dataclasses.astuple`` deep-copies: it cost a sixth of a worker's time)."""
    return (r.row, r.outcome, r.customer_id, r.reason, r.field, r.filled, r.conflicts)


def _blocks(rows: Iterator[tuple[int, dict[str, str]]]) -> Iterator[list[tuple[int, dict[str, str]]]]:
    """The rows in blocks of ``BLOCK_ROWS``, the first ones smaller: the workers start while the main process is
    still reading (and for customers canonicalising) the rows after them."""
    size = max(1, BLOCK_ROWS // 8)
    while block := list(islice(rows, size)):
        yield block
        size = min(2 * size, BLOCK_ROWS)


def _constant(profile: Profile) -> Callable[[], Profile]:
    return lambda: profile


class ParallelImport:
    """``jobs`` worker processes importing one file's rows of ``kind`` (customers or purchases) for ``caller``.

    Rows go out in blocks. The rows of a block that share an identifier form a group, and a group goes to the worker
    that was sent an earlier row with one of its identifiers, or else to the least busy one; each worker imports
    what it is sent in order. A group whose identifiers went to two different workers waits until every row sent so
    far is imported (then any worker may take it): so no row ever overtakes an earlier row it shares an identifier
    with, and the workers never wait on one another otherwise."""

    def __init__(
        self,
        settings: Settings,
        kind: str,
        caller: Caller,
        source: str,
        jobs: int,
        progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        if kind not in ("customers", "purchases"):
            raise ValueError(f"unknown import kind {kind!r}")
        self._kind = kind
        self._source = source
        self.progress = progress  # called with a number of rows as they are done
        context = multiprocessing.get_context("fork")
        self._outbox: Queue[Any] = context.Queue()
        self._inboxes: list[Queue[Any]] = [context.Queue() for _ in range(jobs)]
        self._processes = [
            context.Process(
                target=_work,
                args=(inbox, self._outbox, worker, os.getpid(), settings, caller, kind, source),
                name=f"piivault-import-{worker}",
                daemon=True,
            )
            for worker, inbox in enumerate(self._inboxes)
        ]
        # The workers inherit the main process's objects. Frozen, the collector leaves them alone in the workers:
        # a full collection would otherwise walk them all and write to every page that holds one (copy on write).
        gc.freeze()
        try:
            for process in self._processes:
                process.start()
        finally:
            gc.unfreeze()
        self._queued = [0] * jobs  # rows sent to each worker and not yet imported
        self._owner: dict[Hashable, int] = {}  # identifier → the worker its rows went to, since everything was done
        self._summary = ImportSummary()
        self._duplicates = 0
        self._failed = False

    def __enter__(self) -> ParallelImport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=None if not self._failed else 30)
            if process.is_alive():
                process.terminate()
                process.join()
        for channel in (*self._inboxes, self._outbox):
            if self._failed:
                channel.cancel_join_thread()  # a worker that stopped early left its part unread
            channel.close()

    def run(self, rows: Rows) -> ImportSummary:
        """Import ``rows`` (as ``ImportService.customers`` or ``.purchases`` takes them); the report in file order."""
        try:
            for block in _blocks(iter(rows)):
                self._deal(block)
                while sum(self._queued) > MAX_QUEUED_ROWS:
                    self._receive()
            self._drain()
        except BaseException:
            self._failed = True
            raise
        self._summary.results.sort(key=lambda result: result.row)
        if self._kind == "purchases":
            self._summary.counts["duplicates"] = self._duplicates
        return self._summary

    def _deal(self, block: list[tuple[int, dict[str, str]]]) -> None:
        items, keys = self._keyed(block)
        parts: list[list[int]] = [[] for _ in self._inboxes]
        for group in groups(keys):
            identifiers = {key for index in group for key in keys[index]}
            owners = {self._owner[key] for key in identifiers if key in self._owner}
            if len(owners) > 1:
                self._send(items, parts)  # the rows dealt so far, then wait until all are imported
                self._drain()
            worker = owners.pop() if len(owners) == 1 else min(range(len(parts)), key=self._load(parts))
            parts[worker] += group
            self._owner.update(dict.fromkeys(identifiers, worker))
        self._send(items, parts)
        if len(self._owner) > MAX_REMEMBERED:
            self._drain()  # forgets them: memory stays bounded however long the file

    def _load(self, parts: list[list[int]]) -> Callable[[int], int]:
        return lambda worker: self._queued[worker] + len(parts[worker])

    def _send(self, items: list[Any], parts: list[list[int]]) -> None:
        for worker, part in enumerate(parts):
            if part:
                part.sort()  # file order
                self._inboxes[worker].put([items[index] for index in part])
                self._queued[worker] += len(part)
                part.clear()

    def _keyed(self, block: list[tuple[int, dict[str, str]]]) -> tuple[list[Any], list[list[Hashable]]]:
        """A block's rows as the workers take them, with the identifiers that tie each to other rows; a customer row
        that does not validate is reported here."""
        if self._kind == "purchases":
            orders: list[list[Hashable]] = [
                [value for name in ("order_id", "return_of_order_id") if (value := row.get(name))] for _, row in block
            ]
            return block, orders
        items: list[Any] = []
        customer_keys: list[list[Hashable]] = []
        for number, values in block:
            try:
                profile = profile_of_row(values, self._source)
            except InvalidArgument as error:
                self._summary.add(RowResult(number, "rejected", reason="invalid", field=error.violations[0].field))
                self.progress(1)
                continue
            items.append((number, pack(profile)))
            customer_keys.append(list(profile.identifiers()))
        return items, customer_keys

    def _drain(self) -> None:
        """Wait until every row sent is imported."""
        while any(self._queued):
            self._receive()
        self._owner.clear()

    def _receive(self) -> None:
        """Take one message from the workers (a part imported, or a worker's failure)."""
        while True:
            try:
                message = self._outbox.get(timeout=1.0)
                break
            except queue.Empty:
                if not all(process.is_alive() for process in self._processes):
                    raise ImportWorkerFailed("an import worker exited without finishing its rows") from None
        if message[0] == "failed":
            raise ImportWorkerFailed(f"an import worker stopped on {message[2]}")
        _, worker, rows, results, counts = message
        self._queued[worker] -= rows
        for result in results:
            self._summary.add(RowResult(*result))
        self._duplicates += counts.get("duplicates", 0)
        self.progress(rows)
