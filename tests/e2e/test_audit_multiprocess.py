"""Two server processes on one PostgreSQL extend one audit chain that verifies (30 s in `make soak`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from piivault.client import PiiVault, PiiVaultError, RetryPolicy
from piivault.v1 import customers_pb2 as pb
from tests.conftest import PostgresDatabases
from tests.support.people import People
from tests.support.server import ServerProcess
from vault.app import Vault
from vault.config import Settings

SECONDS = float(os.environ.get("PIIVAULT_TEST_AUDIT_SECONDS", "4"))


@pytest.mark.postgres
def test_two_processes_one_chain(tmp_path: Path, postgres_databases: PostgresDatabases) -> None:
    url = postgres_databases.create()
    env = {"PIIVAULT_DATABASE_URL": url, "PIIVAULT_PROCESSES": "2", "PIIVAULT_LOG_LEVEL": "warning"}
    people = People(seed=77).many(5000)
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    with ServerProcess(tmp_path, env) as server:
        deadline = time.monotonic() + SECONDS

        def drive(offset: int) -> None:
            # A client per thread, each its own connection, so both processes get traffic. No retries: a failed
            # call must count as failed.
            client = PiiVault(
                server.address,
                server.token,
                retry=RetryPolicy.disabled(),
                channel_options=[("grpc.use_local_subchannel_pool", 1)],
            )
            n = offset
            last = ""
            while time.monotonic() < deadline and n < len(people):
                person = people[n]
                try:
                    if last and n % 3:
                        client.customers.get(last, purpose="customer_service")
                    else:
                        reply = client.customers.create(pb.Customer(name=person.name, mobile=person.mobile))
                        last = reply.customer.customer_id
                    with lock:
                        counts["ok"] += 1
                except PiiVaultError:
                    with lock:
                        counts["failed"] += 1
                n += 8
            client.close()

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    vault = Vault.open(Settings(data_dir=tmp_path / "var", database_url=url))
    try:
        report = vault.audit_verifier.verify()
    finally:
        vault.close()
    assert counts["failed"] == 0
    assert report.intact, report
    assert report.events_checked >= counts["ok"] > 0
