"""How long the DPO waits: export and erasure of one customer with a long history.

    python -m bench.dsar --reads 10000 --consents 200

Creates a customer in a fresh SQLite vault, reads it ``--reads`` times (each read is an access-log entry in the
export), records ``--consents`` consent changes, then times the export package (built, signed, verified) and the
erasure (ledger append, shredding transaction, signed receipt). Purchases join the export when the purchase store
exists; until then the history that makes an export big is the access log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.dsar.export import verify_package
from vault.dsar.models import DsarType
from vault.purchases.models import PurchaseInput
from vault.storage.db import Database
from vault.storage.migrate import upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=10_000)
    parser.add_argument("--consents", type=int, default=200)
    parser.add_argument("--purchases", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="piivault-dsar-") as scratch:
        settings = Settings(data_dir=Path(scratch), key_settle_seconds=0)
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database)
        try:
            customer = vault.customers.create(caller(), "", profile_of(People(seed=5).next()))
            for _ in range(args.reads):
                vault.customers.get(caller(), customer.customer_id)
            for n in range(args.consents):
                request = ConsentRequest(
                    "marketing_sms", ConsentScope.STANDARD, Channel.POS, notice_version="v1", notice_sha256="ab" * 32
                )
                if n % 2 == 0:
                    vault.consents.grant(caller(), customer.customer_id, request)
                else:
                    vault.consents.withdraw(caller(), customer.customer_id, request, all_scopes=True)
            when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            orders = [
                (customer.customer_id, PurchaseInput("pos", f"o-{n}", when, 100 + n % 900, "CNY", store_id="SH-1"))
                for n in range(args.purchases)
            ]
            vault.purchases.record_many(caller(), orders)
            who = dpo()
            access = vault.dsar.open(who, None, customer.customer_id, DsarType.ACCESS)
            vault.dsar.verify(who, access.request_id)
            started = time.perf_counter()
            package = vault.dsar.export(who, access.request_id)
            export_seconds = time.perf_counter() - started
            files = verify_package(package, vault.dsar.public_key)["files"]
            erasure = vault.dsar.open(who, None, customer.customer_id, DsarType.ERASURE)
            vault.dsar.verify(who, erasure.request_id)
            started = time.perf_counter()
            vault.dsar.erase(who, erasure.request_id)
            erase_seconds = time.perf_counter() - started
        finally:
            vault.close()
            database.dispose()
    print(
        f"DSAR: export of a customer with {args.purchases:,} purchases, {args.reads:,} access-log entries and "
        f"{args.consents} consent records: "
        f"{export_seconds:.3f} s ({len(package):,} bytes, {len(files)} files, manifest verified); "
        f"erasure with signed receipt: {erase_seconds * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
