"""The example integration (clients/examples/pos_simulator.py) against a real server, run as its docstring says."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from piivault.client import PiiVault
from piivault.v1 import dsar_pb2
from tests.e2e.conftest import Connect
from vault.app import Vault

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clients" / "examples" / "pos_simulator.py"

# The example only talks to the API: where the KEK lives does not matter (both databases still run).
pytestmark = pytest.mark.local_keyring


def simulate(args: list[str], env: dict[str, str], *, as_module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clients.examples.pos_simulator"] if as_module else [sys.executable, str(SCRIPT)]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_pos_simulator_registers_customers_and_records_purchases(
    vault: Vault, address: str, client: PiiVault, connect: Connect
) -> None:
    env = {**os.environ, "PIIVAULT_ADDRESS": address, "PIIVAULT_TOKEN": vault.tokens.create("till-7", "service").secret}
    args = ["--customers", "6", "--purchases", "3", "--store", "SH-042", "--seed", "7"]
    first = simulate(args, env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert {k: summary[k] for k in ("created", "found", "recorded", "duplicates", "rejected")} == {
        "created": 6,
        "found": 0,
        "recorded": 18,
        "duplicates": 0,
        "rejected": 0,
    }
    ids = summary["customer_ids"]
    assert len(set(ids)) == 6

    # The same till run again (as a module, from the repository root): everyone is found, every order a duplicate.
    again = simulate(args, env, as_module=True)
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert (repeat["created"], repeat["found"], repeat["recorded"], repeat["duplicates"]) == (0, 6, 0, 18)
    assert repeat["customer_ids"] == ids

    # What the vault holds, seen through the SDK: six customers with name, mobile and member id, three orders each.
    listed = client.customers.list(purpose="customer_service", page_size=500).customers
    assert sorted(c.customer_id for c in listed) == sorted(ids)
    assert all(c.name and c.mobile.startswith("+86139") and c.member_id.startswith("SH-042-7-") for c in listed)
    officer = connect(vault.tokens.create("dpo-1", "dpo").secret)
    request = officer.dsar.open(dsar_pb2.DSAR_TYPE_ACCESS, customer_id=ids[0]).request
    officer.dsar.verify(request.request_id)
    package = zipfile.ZipFile(io.BytesIO(officer.dsar.export_data(request.request_id)))
    orders = json.loads(package.read("purchases.json"))
    assert [o["order_id"] for o in orders] == [f"SH-042-7-00000-{k}" for k in range(3)]
    # The till printed counts and ids only: no name or number of anyone.
    printed = first.stdout + first.stderr + again.stdout + again.stderr
    assert not [c for c in listed if c.name in printed or c.mobile[3:] in printed]


def test_the_pos_simulator_without_a_token_says_what_to_set(address: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PIIVAULT_TOKEN"}
    done = simulate(["--address", address, "--customers", "1"], env)
    assert done.returncode == 2 and "PIIVAULT_TOKEN" in done.stderr
