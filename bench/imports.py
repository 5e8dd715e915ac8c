"""Import throughput: customer rows/s and purchase rows/s through `ImportService` (what `piivault import` runs).

    python -m bench.imports --customers 5000 --purchases 50000

Writes a CSV of synthetic customers (a fifth of them repeated with a differently written phone, to exercise the
merge path) and a CSV of purchases naming customers by member id, and imports both into a fresh SQLite vault with
the local keyring twice: in one process (``ImportService``; rows/s and rows per CPU second), and with one worker
process per CPU (``vault.imports.parallel``, what ``piivault import`` runs for a file of 2,000 rows or more), whose
rows/s are the issue's figures. The two imports' counts must agree.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.people import People, caller
from vault.app import Vault
from vault.config import Settings
from vault.imports.parallel import ParallelImport, usable_jobs
from vault.imports.reader import read_table
from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService
from vault.storage.db import Database
from vault.storage.migrate import upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--purchases", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=0, help="worker processes of the parallel import (0: one per CPU)")
    args = parser.parse_args()
    jobs = max(2, usable_jobs(args.jobs))
    people = People(seed=23).many(args.customers)
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="piivault-import-") as scratch:
        root = Path(scratch)
        customers_csv, purchases_csv = root / "customers.csv", root / "purchases.csv"
        with customers_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("姓名", "手机号码", "邮箱", "会员卡号", "外部编号"))
            rows = 0
            for n, p in enumerate(people):
                writer.writerow((p.name, p.mobile, p.email, p.member_id, f"E-{n}"))
                rows += 1
                if n % 5 == 0:
                    writer.writerow(("", f"+86 {p.mobile[:3]} {p.mobile[3:7]} {p.mobile[7:]}", "", "", f"E-{n}"))
                    rows += 1
        with purchases_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("会员卡号", "订单号", "下单时间", "金额", "sku", "数量"))
            for n in range(args.purchases):
                p = people[rng.randrange(len(people))]
                writer.writerow(
                    (
                        p.member_id,
                        f"O-{n}",
                        f"2026-03-{1 + n % 28:02d} 10:00:00",
                        f"{rng.randrange(100, 99999) / 100:.2f}",
                        f"SKU-{n % 500}",
                        1,
                    )
                )
        one = _import(root / "one", customers_csv, purchases_csv, jobs=1)
        many = _import(root / "many", customers_csv, purchases_csv, jobs=jobs)
    print(
        f"import, one process: {rows:,} customer rows in {one.customer_seconds:.1f} s = "
        f"{rows / one.customer_seconds:,.0f} rows/s ({one.customer_counts}); {args.purchases:,} purchase rows in "
        f"{one.purchase_seconds:.1f} s = {args.purchases / one.purchase_seconds:,.0f} rows/s ({one.purchase_counts})"
    )
    # On one thread, rows per CPU second is what the code sustains on an otherwise idle core, and it holds still when
    # other work shares the machine (wall-clock rows/s does not).
    print(
        f"per CPU second of the importing process: {rows / one.customer_cpu:,.0f} customer rows, "
        f"{args.purchases / one.purchase_cpu:,.0f} purchase rows"
    )
    print(
        f"import, {jobs} worker processes (what `piivault import` runs on this machine): "
        f"{rows / many.customer_seconds:,.0f} customer rows/s, {args.purchases / many.purchase_seconds:,.0f} purchase "
        f"rows/s; {one.customer_seconds / many.customer_seconds:.2f}x and "
        f"{one.purchase_seconds / many.purchase_seconds:.2f}x one process's; targets 8,000 and 15,000 rows/s"
    )
    print(
        f"CPU seconds, one process ÷ all processes of the parallel import: customers {one.customer_cpu:.2f} ÷ "
        f"{many.customer_cpu:.2f} = {one.customer_cpu / many.customer_cpu:.2f}, purchases {one.purchase_cpu:.2f} ÷ "
        f"{many.purchase_cpu:.2f} = {one.purchase_cpu / many.purchase_cpu:.2f}"
    )
    if (many.customer_counts, many.purchase_counts) != (one.customer_counts, one.purchase_counts):
        raise SystemExit(f"the parallel import's counts differ: {many.customer_counts} {many.purchase_counts}")


@dataclass
class Timed:
    customer_seconds: float
    customer_cpu: float
    customer_counts: dict[str, int]
    purchase_seconds: float
    purchase_cpu: float
    purchase_counts: dict[str, int]


def _import(data: Path, customers_csv: Path, purchases_csv: Path, jobs: int) -> Timed:
    """Both files imported into a new vault under ``data``, by one process (``jobs`` 1, CPU time of this process) or
    by ``jobs`` worker processes (CPU time of the workers and of this process)."""
    settings = Settings(data_dir=data, key_settle_seconds=0)
    data.mkdir()
    database = Database.from_url(settings.effective_database_url)
    upgrade(database.engine)
    Vault.open(settings, database=database).close()  # creates the keys, as `piivault migrate` would
    database.dispose()  # nothing open when the workers fork (see vault.imports.parallel)
    vault = Vault.open(settings) if jobs == 1 else None
    who = caller("bench-import", "service", "cli:import")
    figures: list[float] = []
    counts: list[dict[str, int]] = []
    try:
        for kind, path, fields, source in (
            ("customers", customers_csv, CUSTOMER_FIELDS, "crm"),
            ("purchases", purchases_csv, PURCHASE_FIELDS, "pos"),
        ):
            rows = read_table(path, {}, fields).rows
            started, cpu = time.perf_counter(), _cpu()
            if vault is not None:
                importer = ImportService(vault.customers, vault.purchases)
                summary = (importer.customers if kind == "customers" else importer.purchases)(who, source, rows)
            else:
                with ParallelImport(settings, kind, who, source, jobs) as parallel:
                    summary = parallel.run(rows)
            figures += [time.perf_counter() - started, _cpu() - cpu]
            counts.append(summary.counts)
    finally:
        if vault is not None:
            vault.close()
    return Timed(figures[0], figures[1], counts[0], figures[2], figures[3], counts[1])


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the parallel import's workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
