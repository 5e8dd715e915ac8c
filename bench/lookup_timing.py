"""Can latency tell whether a phone number belongs to a customer? FindCustomers timed for hits and misses.

    python -m bench.lookup_timing --customers 300 --lookups 4000

Interleaves finds of stored and unknown mobiles in random order (in-process: no network noise to hide behind), then
prints both medians and a two-sample Kolmogorov-Smirnov test. A miss decrypts and masks an in-memory decoy so that
it does the work of a hit; what remains is the audit event's content and the data-key cache lookup.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--lookups", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="piivault-timing-") as scratch:
        settings = Settings(data_dir=Path(scratch), lookups_per_minute=0, lookups_per_day=0)
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database)
        try:
            people = People(seed=31).many(args.customers)
            for person in people:
                vault.customers.create(caller(), "", profile_of(person))
            rng = random.Random(4)
            hits: list[float] = []
            misses: list[float] = []
            for _ in range(args.lookups):
                found = rng.random() < 0.5
                mobile = people[rng.randrange(len(people))].mobile if found else f"137{rng.randrange(10**8):08d}"
                started = time.perf_counter()
                vault.customers.find(caller(), IdentifierKind.MOBILE, mobile)
                (hits if found else misses).append(time.perf_counter() - started)
        finally:
            vault.close()
            database.dispose()
    d, p = ks_two_sample(hits, misses)
    print(
        f"lookup timing, in-process: hit median {statistics.median(hits) * 1000:.3f} ms, miss median "
        f"{statistics.median(misses) * 1000:.3f} ms (ratio {statistics.median(hits) / statistics.median(misses):.2f}); "
        f"KS D={d:.3f}, p={p:.3g} over {len(hits)} hits and {len(misses)} misses"
    )


if __name__ == "__main__":
    main()
