"""The pseudonymised analytics feed: purchases of customers with a current analytics consent, and tombstones.

Incremental by an opaque cursor (the last purchase and tombstone sequence numbers seen). A purchase is exported when
the first export that reaches it finds its pseudonym active and its customer consenting; a pseudonym retired by a
withdrawal or an erasure arrives as a tombstone, and nothing later carries it. Rows younger than ``settle_seconds``
wait for the next export, so a transaction that committed out of sequence order (several writers on PostgreSQL) is
not skipped by a cursor that already moved past it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from audit.events import AuditDraft, Caller
from audit.log import AuditLog
from vault import cursors
from vault.crypto import Mac
from vault.errors import InvalidArgument
from vault.purchases import repository as repo
from vault.storage.db import Database

_PREFIX = "a1:"
MAX_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class FeedPurchase:
    pseudonym: str
    source: str
    order_ref: str
    store_id: str
    purchase_time: dt.datetime
    amount_minor: int
    currency: str
    items: int
    payment_method: str
    is_return: bool


@dataclass(frozen=True, slots=True)
class FeedTombstone:
    pseudonym: str
    reason: str
    time: dt.datetime


@dataclass(frozen=True, slots=True)
class FeedPage:
    purchases: list[FeedPurchase]
    tombstones: list[FeedTombstone]
    cursor: str


class AnalyticsFeed:
    def __init__(
        self,
        database: Database,
        audit: AuditLog,
        order_key: Mac,
        settle_seconds: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._database = database
        self._audit = audit
        self._order_key = order_key
        self._settle = dt.timedelta(seconds=settle_seconds)
        self._clock = clock

    def pages(self, caller: Caller, cursor: str, page_size: int) -> Iterator[FeedPage]:
        """Pages until the feed is drained; the last page's cursor is where the next export starts."""
        if page_size < 0:
            raise InvalidArgument.single("page_size", "must not be negative")
        size = min(page_size or 1000, MAX_PAGE)
        purchase_seq, tombstone_seq = _decode(cursor)
        before = self._clock() - self._settle
        # The export is one access to pseudonymised data: audited once, before anything is returned.
        self._audit.record(AuditDraft.of(caller, "ok"))
        while True:
            with self._database.read() as connection:
                tombstone_rows = repo.tombstones(connection, tombstone_seq, before, size)
                purchase_rows = repo.feed(connection, purchase_seq, before, size)
            if tombstone_rows:
                tombstone_seq = tombstone_rows[-1].seq
            if purchase_rows:
                purchase_seq = purchase_rows[-1].seq
            page = FeedPage(
                [self._purchase(row) for row in purchase_rows if row.exportable],
                [FeedTombstone(row.pseudonym, row.reason, row.time) for row in tombstone_rows],
                _encode(purchase_seq, tombstone_seq),
            )
            yield page
            if len(purchase_rows) < size and len(tombstone_rows) < size:
                return

    def _purchase(self, row: Any) -> FeedPurchase:
        is_return = bool(row.return_of_order_id)
        sign = -1 if is_return else 1
        order_ref = self._order_key.digest("analytics-order", f"{row.source}\x00{row.order_id}".encode())[:16].hex()
        return FeedPurchase(
            pseudonym=row.pseudonym,
            source=row.source,
            order_ref=order_ref,
            store_id=row.store_id,
            purchase_time=row.purchase_time,
            amount_minor=sign * row.amount_minor,
            currency=row.currency,
            items=sign * row.items,
            payment_method=row.payment_method,
            is_return=is_return,
        )


def _encode(purchase_seq: int, tombstone_seq: int) -> str:
    return cursors.encode(_PREFIX, f"{purchase_seq}:{tombstone_seq}")


def _decode(cursor: str) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    rule = "must be a next_cursor returned by ExportPurchases"
    first, second = cursors.decode(cursor, _PREFIX, _two_numbers, "cursor", rule).split(":")
    return int(first), int(second)


def _two_numbers(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 2 and all(part.isdigit() and len(part) <= 18 for part in parts)
