"""A restored database copy cannot bring an erased customer back: the ledger is replayed before SERVING."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from piivault.client import NotFound, PiiVault, RetryPolicy
from piivault.v1 import customers_pb2 as pb
from tests.support.people import People, caller
from tests.support.server import ServerProcess
from vault.app import Vault
from vault.config import Settings
from vault.dsar.models import DsarType


def test_restored_backup_is_re_erased_before_the_server_reports_serving(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start()
    people = People(seed=41).many(2)
    with PiiVault(server.address, server.token, retry=RetryPolicy.disabled()) as client:
        ids = [client.customers.create(pb.Customer(name=p.name, mobile=p.mobile)).customer.customer_id for p in people]
    server.stop()
    database_file = server.data_dir / "var" / "piivault.db"
    shutil.copy(database_file, tmp_path / "backup.db")

    settings = Settings(data_dir=server.data_dir / "var")
    vault = Vault.open(settings)
    officer = caller("dpo-1", "dpo", "cli:dsar erase", purpose="dsar")
    request = vault.dsar.open(officer, None, ids[0], DsarType.ERASURE)  # the DPO's erasure, as `piivault dsar` runs it
    vault.dsar.verify(officer, request.request_id)
    vault.dsar.erase(officer, request.request_id)
    vault.close()

    shutil.copy(tmp_path / "backup.db", database_file)
    for suffix in ("-wal", "-shm"):
        Path(str(database_file) + suffix).unlink(missing_ok=True)
    server.log_path.write_text("")
    server.start()  # returns once the health check says SERVING
    with PiiVault(server.address, server.token, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(NotFound):
            client.customers.get(ids[0], purpose="customer_service")
        kept = client.customers.get(ids[1], purpose="customer_service")
        assert kept.customer.name == people[1].name
    server.stop()
    events = [json.loads(line)["event"] for line in server.log_path.read_text().splitlines()]
    assert events.index("erasure.ledger_reapplied") < events.index("server.started")
