"""A DSAR erasure killed at every step is finished by the next start (ledger replay) and the next attempt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.erasure_child import KILLED
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.dsar.models import DsarStatus, DsarType
from vault.errors import NotFound
from vault.storage.db import Database

ROOT = Path(__file__).resolve().parents[2]
DPO = dpo("/piivault.v1.DsarService/Test")


def open_vault(database_url: str, data_dir: Path) -> Vault:
    return Vault.open(Settings(data_dir=data_dir, database_url=database_url, key_settle_seconds=0))


@pytest.mark.parametrize("step", ["before-ledger", "after-ledger", "in-transaction", "after-commit", "none"])
def test_a_killed_erasure_completes(database: Database, database_url: str, tmp_path: Path, step: str) -> None:
    database.dispose()  # the vaults below open their own connections
    data_dir = tmp_path / "var"
    vault = open_vault(database_url, data_dir)
    try:
        people = People(seed=41)
        bystander = vault.customers.create(caller(), "", profile_of(people.next()))
        victim = vault.customers.create(caller(), "", profile_of(people.next()))
        request = vault.dsar.open(DPO, None, victim.customer_id, DsarType.ERASURE)
        vault.dsar.verify(DPO, request.request_id)
    finally:
        vault.close()

    child = subprocess.run(
        [sys.executable, "-m", "tests.support.erasure_child", database_url, str(data_dir), request.request_id, step],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == (0 if step == "none" else KILLED), child.stderr[-2000:]

    restarted = open_vault(database_url, data_dir)  # start-up replays the erasure ledger
    try:
        state = restarted.dsar.get(DPO, request.request_id)
        if state.status is DsarStatus.VERIFIED:
            restarted.dsar.erase(DPO, request.request_id)  # the DPO runs the step again: it completes
        assert restarted.dsar.get(DPO, request.request_id).status is DsarStatus.COMPLETED
        with pytest.raises(NotFound):
            restarted.customers.get(dpo(), victim.customer_id)
        assert restarted.customers.get(dpo(), bystander.customer_id).profile == bystander.profile
        assert restarted.audit_verifier.verify().intact
    finally:
        restarted.close()
