"""Online KEK rotation over many customers while a reader keeps reading every one of them.

    python -m bench.rotation_soak --customers 100000            # local keyring (make soak runs this)
    python -m bench.rotation_soak --customers 20000 --provider vault-transit

Prints how long creating, rotating and rewrapping took, how many reads the concurrent reader made and how many of them
failed (the acceptance bar is zero), and the KEK versions afterwards. Exits non-zero if any read failed or any key
was left on the old version.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.keys.local import LocalKeyringProvider
from vault.keys.provider import KeyProvider
from vault.storage.db import Database
from vault.storage.migrate import upgrade


def _provider(kind: str, settings: Settings, stack: list[object]) -> KeyProvider:
    if kind == "local":
        return LocalKeyringProvider.open_or_create(settings.keyring_path)
    from tests.transit_server import TransitServer
    from vault.keys.vault_transit import VaultTransitKeyProvider

    server = TransitServer()
    server.start()
    stack.append(server)
    return VaultTransitKeyProvider.connect(url=server.url, token=server.root_token)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--provider", choices=("local", "vault-transit"), default="local")
    args = parser.parse_args()
    stack: list[object] = []
    with tempfile.TemporaryDirectory(prefix="piivault-rotation-") as scratch:
        settings = Settings(data_dir=Path(scratch), key_settle_seconds=0)  # one process: no pooled keys elsewhere
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database, provider=_provider(args.provider, settings, stack))
        people = People(seed=5)
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            profiles = (profile_of(people.next()) for _ in range(args.customers))
            ids = [c.customer_id for c in pool.map(lambda p: vault.customers.create(caller("soak"), "", p), profiles)]
        created = time.perf_counter() - started

        failures = 0
        reads = 0
        stop = threading.Event()

        def reader() -> None:
            nonlocal failures, reads
            while not stop.is_set():
                for customer_id in ids:
                    if stop.is_set():
                        break
                    try:
                        vault.customers.get(caller(), customer_id)
                        reads += 1
                    except Exception:  # noqa: BLE001 - counted; the bar is zero
                        failures += 1

        thread = threading.Thread(target=reader)
        thread.start()
        started = time.perf_counter()
        last = None
        for step in vault.keys.rotate():
            last = step
        rotated = time.perf_counter() - started
        stop.set()
        thread.join()
        counts = vault.keys.counts()
        assert last is not None
        behind = counts.below(last.target_version)
        refused = ""
        try:
            vault.keys.raise_min_decryption_version(last.target_version)
        except Exception as error:  # noqa: BLE001 - reported below
            refused = type(error).__name__
        vault.close()
    for item in stack:
        item.stop()  # type: ignore[attr-defined]
    print(f"provider {args.provider}: {args.customers} customers created in {created:.1f} s")
    print(
        f"rotation to v{last.target_version}: {last.rewrapped} keys rewrapped, {last.skipped} skipped, "
        f"in {rotated:.1f} s ({last.rewrapped / rotated:.0f} keys/s)"
    )
    print(f"concurrent reader: {reads} reads during rotation, {failures} failed")
    print(f"after: customer DEKs per version {counts.customer_deks}, service keys {counts.service_keys}")
    outcome = f"refused: {refused}" if refused else "ok"
    print(f"raising the minimum decryption version to v{last.target_version}: {outcome}")
    return 0 if failures == 0 and behind == 0 and not refused else 1


if __name__ == "__main__":
    sys.exit(main())
