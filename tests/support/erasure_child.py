"""A process that runs one DSAR erasure and dies (SIGKILL-like ``os._exit``) at a chosen step.

Usage: python -m tests.support.erasure_child DATABASE_URL DATA_DIR REQUEST_ID STEP
Steps: before-ledger, after-ledger, in-transaction, after-commit, none.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tests.support.people import dpo
from vault.app import Vault
from vault.config import Settings
from vault.customers import erasure

KILLED = 137


def die(*_: Any, **__: Any) -> None:
    os._exit(KILLED)


def main(database_url: str, data_dir: str, request_id: str, step: str) -> None:
    vault = Vault.open(Settings(data_dir=Path(data_dir), database_url=database_url, key_settle_seconds=0))
    ledger_append = erasure.ErasureLedgerFile.append
    if step == "before-ledger":
        erasure.ErasureLedgerFile.append = die  # type: ignore[method-assign]
    elif step == "after-ledger":

        def append_then_die(self: erasure.ErasureLedgerFile, subject: bytes, when: Any) -> None:
            ledger_append(self, subject, when)
            die()

        erasure.ErasureLedgerFile.append = append_then_die  # type: ignore[method-assign]
    elif step == "in-transaction":
        erasure._record = die  # the customer's rows are deleted, the transaction not yet committed
    elif step == "after-commit":
        vault.data_keys.forget = die  # type: ignore[method-assign]
    vault.dsar.erase(dpo("/piivault.v1.DsarService/EraseCustomer"), request_id)
    vault.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
