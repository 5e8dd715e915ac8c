"""A bounded, TTL'd in-memory cache of unwrapped data keys.

Keyed by the customer id *and* the wrapped DEK text, so a rewrap, or an erasure done by another replica, can never serve
a stale key: a changed or deleted wrapped DEK simply misses. Entries expire after ``ttl_seconds`` to bound how long key
material lingers in memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from vault.crypto import SecretKey
from vault.observability.metrics import DEK_CACHE_HITS, DEK_CACHE_MISSES


class DekCache:
    def __init__(self, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, SecretKey]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"DekCache(entries={len(self._entries)}, keys=[secure])"

    def get(self, customer_id: str, wrapped_blob: str) -> SecretKey | None:
        key = (customer_id, wrapped_blob)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < self._clock():
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                DEK_CACHE_MISSES.inc()
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            DEK_CACHE_HITS.inc()
            return entry[1]

    def put(self, customer_id: str, wrapped_blob: str, dek: SecretKey) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._entries[(customer_id, wrapped_blob)] = (self._clock() + self._ttl, dek)
            self._entries.move_to_end((customer_id, wrapped_blob))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def invalidate(self, customer_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == customer_id]:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
