"""Can latency tell whether a phone number belongs to a customer? FindCustomers timed for hits and misses.

    python -m bench.lookup_timing --customers 300 --lookups 4000

Interleaves finds of stored and unknown mobiles in random order (in-process: no network noise to hide behind), then
prints both medians and a two-sample Kolmogorov-Smirnov test, twice: without the latency floor (the raw gap: a miss
decrypts and masks an in-memory decoy, so what remains is the audit event's content and the data-key cache lookup),
and with the configured floor (PIIVAULT_FIND_FLOOR_MS, see vault/customers/timing.py), which is what a caller sees.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import IdentifierKind
from vault.storage.db import Database
from vault.storage.migrate import upgrade


def ks_two_sample(a: list[float], b: list[float]) -> tuple[float, float]:
    """The KS statistic D and its asymptotic p-value (Kolmogorov distribution, Stephens' small-sample correction)."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            i += 1
        else:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(max(p, 0.0), 1.0)


def measure(floor_ms: float, customers: int, lookups: int) -> tuple[list[float], list[float], int]:
    """Hit and miss latencies (seconds) of interleaved finds, and how many lookups overran the floor."""
    with tempfile.TemporaryDirectory(prefix="piivault-timing-") as scratch:
        settings = Settings(data_dir=Path(scratch), lookups_per_minute=0, lookups_per_day=0, find_floor_ms=floor_ms)
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database)
        try:
            people = People(seed=31).many(customers)
            for person in people:
                vault.customers.create(caller(), "", profile_of(person))
            rng = random.Random(4)
            hits: list[float] = []
            misses: list[float] = []
            for _ in range(lookups):
                found = rng.random() < 0.5
                mobile = people[rng.randrange(len(people))].mobile if found else f"137{rng.randrange(10**8):08d}"
                started = time.perf_counter()
                # Kept until the clock is read: freeing a hit's decrypted customer takes a few microseconds of its own,
                # which is the caller's cost after the answer, not the service's latency.
                answer = vault.customers.find(caller(), IdentifierKind.MOBILE, mobile)
                (hits if found else misses).append(time.perf_counter() - started)
                del answer
            overruns = vault.customers.find_overruns
        finally:
            vault.close()
            database.dispose()
    return hits, misses, overruns


def report(label: str, hits: list[float], misses: list[float]) -> str:
    d, p = ks_two_sample(hits, misses)
    return (
        f"lookup timing, in-process, {label}: hit median {statistics.median(hits) * 1000:.3f} ms, miss median "
        f"{statistics.median(misses) * 1000:.3f} ms (ratio {statistics.median(hits) / statistics.median(misses):.3f}); "
        f"KS D={d:.3f}, p={p:.3g} over {len(hits)} hits and {len(misses)} misses"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--lookups", type=int, default=4000)
    parser.add_argument("--floor-ms", type=float, default=Settings().find_floor_ms)
    args = parser.parse_args()
    hits, misses, _ = measure(0.0, args.customers, args.lookups)
    print(report("no floor (raw work)", hits, misses))
    hits, misses, overruns = measure(args.floor_ms, args.customers, args.lookups)
    print(report(f"floor {args.floor_ms:g} ms", hits, misses) + f"; {overruns} lookups overran the floor")


if __name__ == "__main__":
    main()
