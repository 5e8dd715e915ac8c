"""Import throughput: customer rows/s and purchase rows/s through `ImportService` (what `piivault import` runs).

    python -m bench.imports --customers 5000 --purchases 50000

Writes a CSV of synthetic customers (a fifth of them repeated with a differently written phone, to exercise the
merge path) and a CSV of purchases naming customers by member id, imports both into a fresh SQLite vault with the
local keyring, and prints rows/s for each.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

from tests.support.people import People, caller
from vault.app import Vault
from vault.config import Settings
from vault.imports.reader import read_table
from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService
from vault.storage.db import Database
from vault.storage.migrate import upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--purchases", type=int, default=50_000)
    args = parser.parse_args()
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
        settings = Settings(data_dir=root / "var", key_settle_seconds=0)
        settings.data_dir.mkdir()
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database)
        try:
            importer = ImportService(vault.customers, vault.purchases)
            who = caller("bench-import", "service", "cli:import")
            started, cpu = time.perf_counter(), time.process_time()
            summary = importer.customers(who, "crm", read_table(customers_csv, {}, CUSTOMER_FIELDS).rows)
            customer_seconds, customer_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            purchase_summary = importer.purchases(who, "pos", read_table(purchases_csv, {}, PURCHASE_FIELDS).rows)
            purchase_seconds, purchase_cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            vault.close()
            database.dispose()
    print(
        f"import: {rows:,} customer rows in {customer_seconds:.1f} s = {rows / customer_seconds:,.0f} rows/s "
        f"({summary.counts}); {args.purchases:,} purchase rows in {purchase_seconds:.1f} s = "
        f"{args.purchases / purchase_seconds:,.0f} rows/s ({purchase_summary.counts})"
    )
    # The import runs on one thread: rows per CPU second is what it would sustain on an otherwise idle core, and it
    # holds still when other work shares the machine (wall-clock rows/s does not).
    print(
        f"per CPU second of the importing process: {rows / customer_cpu:,.0f} customer rows, "
        f"{args.purchases / purchase_cpu:,.0f} purchase rows"
    )


if __name__ == "__main__":
    main()
