"""How fast `piivault audit verify` recomputes the audit chain.

    python -m bench.audit_verify --events 1000000

Builds a chain of synthetic events in a fresh SQLite database (appending in large batches, as group commit does
under load), then verifies it end to end and prints events/s for both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from audit.events import AuditDraft, Caller
from audit.log import AuditLog
from audit.verify import ChainVerifier
from vault.crypto import ChainMac, SecretKey, Signer
from vault.storage.db import Database
from vault.storage.migrate import upgrade

BATCH = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="piivault-audit-") as scratch:
        database = Database.from_url(f"sqlite:///{Path(scratch) / 'audit.db'}")
        upgrade(database.engine)
        chain_key = SecretKey.generate().reveal()
        chain = ChainMac(SecretKey(chain_key))
        signer = Signer(SecretKey.generate())
        log = AuditLog(chain, signer)
        caller = Caller("pos-shanghai-01", "service", "/piivault.v1.CustomerService/GetCustomer", "", "ipv4:10.1.2.3:5")
        started = time.perf_counter()
        written = 0
        while written < args.events:
            size = min(BATCH, args.events - written)
            drafts = [
                AuditDraft.of(
                    caller, "ok", (f"00000000-0000-4000-8000-{written + n:012d}",), ("mobile", "name", "email")
                )
                for n in range(size)
            ]
            with database.write_driver() as transaction:
                log.append(transaction, drafts)
            written += size
        built = time.perf_counter() - started
        verifier = ChainVerifier(database, chain, signer.public_key, chain_key)
        started = time.perf_counter()
        report = verifier.verify(workers=1)
        verified_one = time.perf_counter() - started
        started = time.perf_counter()
        parallel = verifier.verify(workers=os.cpu_count() or 1)
        verified = time.perf_counter() - started
        database.dispose()
    print(f"audit chain: {args.events} events appended in {built:.1f} s ({args.events / built:,.0f} events/s)")
    print(
        f"audit verify, 1 process: {report.events_checked} events in {verified_one:.1f} s "
        f"({report.events_checked / verified_one:,.0f} events/s), intact={report.intact}"
    )
    print(
        f"audit verify, {os.cpu_count()} processes (what `piivault audit verify` uses): "
        f"{parallel.events_checked} events in {verified:.1f} s ({parallel.events_checked / verified:,.0f} events/s), "
        f"intact={parallel.intact}"
    )


if __name__ == "__main__":
    main()
