"""KEK rotation: rotate, rewrap every wrapped key in batches (online, resumable), then raise the minimum version.

Rewrapping never decrypts field data and never blocks readers: each batch is rewrapped by the provider (Transit
``rewrap``: the DEK never leaves Vault) and written back with a compare-and-set on the old wrapped value, so a row that
changed meanwhile (an erasure, a concurrent rewrap by another operator) is simply left for the next pass. The DEK
cache is keyed by the wrapped form, so a reader that held the old form misses once and unwraps the new one. Because
the work is "every row below the latest version", a crashed rotation resumes by running again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Table, bindparam, func, select, update

from vault.crypto import CryptoError
from vault.keys.data_keys import POOL_MAX_AGE_SECONDS, DataKeys
from vault.keys.provider import KekStatus, KeyProvider, MinimumVersionRefused, WrappedKey
from vault.storage.db import Database
from vault.storage.models import Base, CustomerRow, ServiceKeyRow

BATCH_SIZE = 500
_log = structlog.get_logger("piivault.keys")
SETTLE_SECONDS = 2 * POOL_MAX_AGE_SECONDS

_customers = Base.metadata.tables[CustomerRow.__tablename__]
_service_keys = Base.metadata.tables[ServiceKeyRow.__tablename__]


@dataclass(frozen=True)
class KeyCounts:
    """How many wrapped keys sit on each KEK version."""

    customer_deks: dict[int, int]
    service_keys: dict[int, int]

    def below(self, version: int) -> int:
        return sum(n for v, n in (*self.customer_deks.items(), *self.service_keys.items()) if v < version)

    @property
    def total(self) -> int:
        return sum(self.customer_deks.values()) + sum(self.service_keys.values())


@dataclass(frozen=True)
class RewrapProgress:
    target_version: int
    rewrapped: int
    total: int
    skipped: int
    finished: bool


class KeyRotation:
    def __init__(
        self,
        database: Database,
        provider: KeyProvider,
        data_keys: DataKeys | None = None,
        settle_seconds: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._provider = provider
        self._data_keys = data_keys
        self._settle = settle_seconds
        self._clock = clock

    def counts(self) -> KeyCounts:
        with self._database.read() as connection:
            deks = connection.execute(
                select(CustomerRow.kek_version, func.count()).group_by(CustomerRow.kek_version)
            ).all()
            services = connection.execute(
                select(ServiceKeyRow.kek_version, func.count()).group_by(ServiceKeyRow.kek_version)
            ).all()
        return KeyCounts({int(v): int(n) for v, n in deks}, {int(v): int(n) for v, n in services})

    def status(self) -> tuple[KekStatus, KeyCounts]:
        return self._provider.status(), self.counts()

    def rotate(self) -> Iterator[RewrapProgress]:
        """Create a new KEK version, then rewrap every key below it. The first step is yielded as soon as the new
        version exists (nothing rewrapped yet), so the caller can record the rotation before any batch is tried;
        then progress after each batch."""
        new_version = self._provider.rotate()
        if self._data_keys is not None:
            self._data_keys.drain_pool()
        yield RewrapProgress(new_version, 0, self.counts().below(new_version), 0, finished=False)
        yield from self.rewrap(new_version)

    def rewrap(self, target_version: int | None = None) -> Iterator[RewrapProgress]:
        """Rewrap every wrapped key below ``target_version`` (default: the latest). Safe to run again after a crash."""
        target = target_version or self._provider.status().latest_version
        total = self.counts().below(target)
        done = skipped = 0
        for table, key_column, blob_column in (
            (_service_keys, _service_keys.c.name, _service_keys.c.wrapped_key),
            (_customers, _customers.c.customer_id, _customers.c.wrapped_dek),
        ):
            after = ""
            while True:
                with self._database.read() as connection:
                    rows = connection.execute(
                        select(key_column, blob_column, table.c.kek_version)
                        .where(table.c.kek_version < target, key_column > after)
                        .order_by(key_column)
                        .limit(BATCH_SIZE)
                    ).all()
                if not rows:
                    break
                after = rows[-1][0]
                rows, fresh, broken = self._rewrap_rows(rows)
                changed = self._write_back(table, key_column.name, blob_column.name, rows, fresh)
                done += changed
                skipped += len(rows) - changed + broken
                yield RewrapProgress(target, done, total, skipped, finished=False)
        yield RewrapProgress(target, done, total, skipped, finished=True)

    def _rewrap_rows(self, rows: Sequence[Any]) -> tuple[list[Any], list[WrappedKey], int]:
        """Rewrap a batch; if one wrapped key does not authenticate, go item by item and leave the broken ones.

        A tampered or corrupt wrapped key must not stop every other key from moving to the new version; it stays on
        its old version, so ``counts()`` keeps showing it and raising the minimum stays refused until it is dealt with.
        """
        try:
            return list(rows), self._provider.rewrap([WrappedKey(row[1], row[2]) for row in rows]), 0
        except CryptoError:
            kept: list[Any] = []
            fresh: list[WrappedKey] = []
            for row in rows:
                try:
                    fresh.extend(self._provider.rewrap([WrappedKey(row[1], row[2])]))
                    kept.append(row)
                except CryptoError:
                    _log.error("keys.rewrap_failed_integrity", count=1)
            return kept, fresh, len(rows) - len(kept)

    def _write_back(
        self, table: Table, key_name: str, blob_name: str, rows: Sequence[Any], fresh: list[WrappedKey]
    ) -> int:
        statement = (
            update(table)
            .where(table.c[key_name] == bindparam("match_key"), table.c[blob_name] == bindparam("match_blob"))
            .values({blob_name: bindparam("new_blob"), "kek_version": bindparam("new_version")})
        )
        params = [
            {"match_key": row[0], "match_blob": row[1], "new_blob": item.blob, "new_version": item.kek_version}
            for row, item in zip(rows, fresh, strict=True)
        ]
        with self._database.write() as connection:
            # sqlite3 and psycopg 3 both report the total rows matched by an executemany.
            return int(connection.execute(statement, params).rowcount)

    def raise_min_decryption_version(self, version: int) -> None:
        """Refused while any wrapped key still depends on an older version."""
        status = self._provider.status()
        if not status.min_decryption_version <= version <= status.latest_version:
            raise MinimumVersionRefused(
                f"the minimum must lie between {status.min_decryption_version} and {status.latest_version}"
            )
        age = self._clock() - status.latest_created
        if version == status.latest_version and status.latest_created and age < self._settle:
            # Server processes keep pre-wrapped data keys for up to POOL_MAX_AGE_SECONDS: a customer created from one
            # after the count below would be wrapped under a version this call is about to retire.
            raise MinimumVersionRefused(
                f"the latest KEK version is {age:.0f} s old; wait {self._settle - age:.0f} s until no process can "
                "still hold data keys wrapped under older versions, then rewrap and retry"
            )
        remaining = self.counts().below(version)
        if remaining:
            raise MinimumVersionRefused(
                f"{remaining} wrapped keys are still below version {version}; rewrap them first (piivault keys rewrap)"
            )
        self._provider.set_min_decryption_version(version)
