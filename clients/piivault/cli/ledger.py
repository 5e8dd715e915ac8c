"""``piivault replay-ledger``: after a database restore, re-apply the erasures other replicas recorded.

Every server process replays its own erasure ledger (``PIIVAULT_ERASURE_LEDGER``) when it starts, before its port
opens. With several replicas, each keeps its own file; a restored database must have every replica's erasures
re-applied before *any* replica serves, or a customer erased through replica B could be read through replica A until
B restarts. This command replays the given files (copies of each replica's ledger) into the configured database.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from piivault.cli.common import err, fail


def replay_ledger(
    ledgers: Annotated[list[Path], typer.Argument(help="Erasure-ledger files (JSON lines), one per replica.")],
) -> None:
    """Re-apply the erasures in each ledger file to the database (run after a restore, before serving)."""
    from vault.app import Vault
    from vault.config import ConfigError, Settings
    from vault.keys.local import KeyringError
    from vault.keys.provider import ProviderConfigError
    from vault.storage.migrate import SchemaError

    missing = [str(path) for path in ledgers if not path.is_file()]
    if missing:
        fail("no such ledger file: " + ", ".join(missing))
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        fail(str(error))
    total = 0
    for path in ledgers:
        try:
            vault = Vault.open(replace(settings, erasure_ledger_path=path))  # opening replays the ledger
        except (KeyringError, SchemaError, ProviderConfigError) as error:
            fail(str(error))
        vault.close()
        total += vault.replayed_erasures
        err.print(f"{path}: {vault.replayed_erasures} customers erased again")
    err.print(f"replayed {len(ledgers)} ledger files; {total} customers erased again")
