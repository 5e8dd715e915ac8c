"""Crypto-shredding and the erasure ledger.

Erasing a customer destroys their wrapped DEK together with every ciphertext and blind index; without the DEK the
ciphertexts are noise, including copies of them in old backups. But an old backup also holds the wrapped DEK, and the
KEK can still unwrap it — so restoring a backup could bring an erased customer back. The erasure ledger prevents that:
every erasure is appended (and fsync'd) to a ledger file that lives outside the database and its backups, *before* the
database is touched, and on every start-up, before the port opens, the ledger is replayed: any customer whose keyed
id digest is in the ledger is shredded again. The ledger holds keyed digests of customer ids (HMAC with a service
key), never ids or personal data.

In production the ledger file must sit on durable storage that is backed up separately from the database (and shared
by every replica, or written by the one that runs erasures). A copy is also kept in the ``erasure_ledger`` table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import structlog
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from audit.events import AuditDraft, Caller
from vault.crypto import Mac
from vault.errors import PiivaultError
from vault.keys.data_keys import DataKeys
from vault.purchases import repository as purchases_repo
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter
from vault.storage.models import BlindIndexRow, ConsentStateRow, CustomerRow, ErasureRow, IdempotencyRow

_log = structlog.get_logger("piivault.erasure")
_REPLAY = Caller("system", "system", "erasure.replay")
_FORMAT = 1


class ErasureLedgerFile:
    """Append-only JSON lines: ``{"v": 1, "subject": <hex digest>, "time": <ISO 8601>}``; fsync'd on every append."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def append(self, subject: bytes, when: dt.datetime) -> None:
        self._write({"v": _FORMAT, "subject": subject.hex(), "time": when.isoformat()})

    def _write(self, entry: dict[str, object]) -> None:
        line = json.dumps(entry) + "\n"
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # a crash tore the last line: never glue this record onto it
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def cancel(self, subject: bytes, when: dt.datetime) -> None:
        """Withdraw an entry whose erasure was refused inside its transaction (a legal hold, a changed request), so
        that no replay carries out an erasure the vault declined."""
        self._write({"v": _FORMAT, "subject": subject.hex(), "time": when.isoformat(), "cancelled": True})

    def subjects(self) -> set[bytes]:
        """The subjects still to be erased: every entry, in file order, less those cancelled after it."""
        if not self._path.exists():
            return set()
        found: set[bytes] = set()
        for line in self._path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                subject = bytes.fromhex(entry["subject"])
                if entry.get("cancelled") is True:
                    found.discard(subject)
                else:
                    found.add(subject)
            except (ValueError, KeyError, TypeError, AttributeError):
                # A torn last line from a crash mid-append: that erasure's database transaction never ran either.
                _log.warning("erasure.ledger_line_unreadable")
        return found


class CryptoShredder:
    def __init__(
        self,
        database: Database,
        writer: GroupCommitter,
        data_keys: DataKeys,
        ledger_key: Mac,
        ledger: ErasureLedgerFile,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        *,
        delete_purchases: bool = True,
    ) -> None:
        self._delete_purchases = delete_purchases
        self._database = database
        self._writer = writer
        self._data_keys = data_keys
        self._mac = ledger_key
        self._ledger = ledger
        self._clock = clock

    def subject(self, customer_id: str) -> bytes:
        return self._mac.digest("erasure-subject", customer_id.encode())

    def shred(
        self,
        caller: Caller,
        customer_id: str,
        also: Callable[[Connection], None] | None = None,
        check: Callable[[Connection], None] | None = None,
    ) -> bool:
        """Destroy the customer's DEK, ciphertexts, indexes and idempotency records. True if anything was there.

        ``check`` runs first inside the transaction and may refuse (a legal hold placed a moment ago); the deletion,
        ``also`` (e.g. completing the DSAR that asked for it) and the audit event commit together. A refusal inside
        the transaction cancels the ledger entry, so no replay erases what the vault declined to erase."""
        subject = self.subject(customer_id)
        now = self._clock()
        self._ledger.append(subject, now)  # first: a crash after this line is finished by the next start-up

        def erase(connection: Connection) -> bool:
            if check is not None:
                check(connection)
            erased = _delete_customer(connection, customer_id, self._delete_purchases)
            _record(connection, subject, now)
            if also is not None:
                also(connection)
            return erased

        try:
            erased = self._writer.submit(erase, (AuditDraft.of(caller, "ok", (customer_id,)),))
        except PiivaultError:
            self._ledger.cancel(subject, self._clock())
            raise
        self._data_keys.forget(customer_id)
        return erased

    def replay(self) -> int:
        """Re-apply every ledgered erasure to the database (after a restore). Returns how many customers it shredded."""
        with self._database.read() as connection:
            recorded = {bytes(d) for d in connection.execute(select(ErasureRow.subject_digest)).scalars()}
            customer_ids = list(connection.execute(select(CustomerRow.customer_id)).scalars())
        subjects = self._ledger.subjects() | recorded
        if not subjects:
            return 0
        resurrected = [cid for cid in customer_ids if self.subject(cid) in subjects]
        if resurrected:
            with self._database.read() as connection:
                held = set(
                    connection.execute(
                        select(CustomerRow.customer_id).where(
                            CustomerRow.customer_id.in_(resurrected), CustomerRow.legal_hold.is_(True)
                        )
                    ).scalars()
                )
            if held:
                # A legal hold placed after the erasure was ledgered wins: the DPO must lift it and erase again.
                _log.warning("erasure.replay_held", count=len(held))
                resurrected = [cid for cid in resurrected if cid not in held]
        if not resurrected and subjects <= recorded:
            return 0
        now = self._clock()

        def reapply(connection: Connection) -> None:
            for customer_id in resurrected:
                _delete_customer(connection, customer_id, self._delete_purchases)
            for subject in subjects - recorded:
                _record(connection, subject, now)

        self._writer.submit(reapply, (AuditDraft.of(_REPLAY, "ok", tuple(resurrected)),))
        for customer_id in resurrected:
            self._data_keys.forget(customer_id)
        if resurrected:
            _log.warning("erasure.replayed", count=len(resurrected))
        return len(resurrected)


def _delete_customer(connection: Connection, customer_id: str, delete_purchases: bool = True) -> bool:
    # The consent ledger itself stays (proof of what was agreed, append-only); its evidence references were encrypted
    # under the DEK destroyed here. The current-state rows go with the customer.
    connection.execute(delete(ConsentStateRow).where(ConsentStateRow.customer_id == customer_id))
    # Purchases: tombstone the active pseudonym for the analytics side, then delete the purchases or keep them with no
    # pseudonym at all; the pseudonym mapping goes with the customer row (foreign key), unlinking everything.
    purchases_repo.retire(connection, customer_id, "erased", dt.datetime.now(dt.UTC))
    purchases_repo.forget_purchases(connection, customer_id, delete_rows=delete_purchases)
    connection.execute(delete(BlindIndexRow).where(BlindIndexRow.customer_id == customer_id))
    connection.execute(delete(IdempotencyRow).where(IdempotencyRow.customer_id == customer_id))
    result = connection.execute(delete(CustomerRow).where(CustomerRow.customer_id == customer_id))
    return result.rowcount > 0


def _record(connection: Connection, subject: bytes, when: dt.datetime) -> None:
    exists = connection.execute(select(ErasureRow.subject_digest).where(ErasureRow.subject_digest == subject)).first()
    if exists is None:
        # Another replica may record the same erasure concurrently; its row is as good as ours.
        with suppress(SqlIntegrityError), connection.begin_nested():
            connection.execute(insert(ErasureRow).values(subject_digest=subject, erase_time=when))
