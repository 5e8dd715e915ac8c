"""`piivault serve` as a real process: migrate, token create, health, reflection via `buf curl`, SIGTERM, clean logs.

The API is driven through the SDK, except in the `buf curl` test, whose point is the README's `buf curl` commands.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from piivault.client import InvalidArgument, PiiVault, RetryPolicy
from piivault.v1 import customers_pb2 as pb
from tests.support.people import People
from tests.support.scan import find_in_bytes, needles, sqlite_files
from tests.support.server import ServerProcess

BUF = Path(sys.executable).parent / "buf"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path) as server:
        yield server


def buf_curl(server: ServerProcess, method: str, body: dict[str, object] | None = None, token: bool = True) -> str:
    command = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    if token:
        command += ["-H", f"authorization: Bearer {server.token}"]
    if body is not None:
        command += ["-d", json.dumps(body, ensure_ascii=False)]
    command.append(f"http://{server.address}/{method}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


@pytest.mark.skipif(shutil.which(str(BUF)) is None, reason="buf-bin is not installed")
def test_buf_curl_through_reflection_like_the_readme(served: ServerProcess) -> None:
    assert "piivault.v1.CustomerService/CreateCustomer" in buf_curl_list(served)
    created = json.loads(
        buf_curl(
            served,
            "piivault.v1.CustomerService/CreateCustomer",
            {"customer": {"name": "李娜", "mobile": "+86 139-0000-0042"}, "request_id": "readme-1"},
        )
    )
    assert created["customer"]["mobile"] == "+8613900000042"
    found = json.loads(
        buf_curl(
            served,
            "piivault.v1.CustomerService/FindCustomers",
            {"mobile": "13900000042", "purpose": "customer_service"},
        )
    )
    assert found["customers"][0]["customerId"] == created["customer"]["customerId"]
    assert "unauthenticated" in buf_curl(served, "piivault.v1.CustomerService/ListCustomers", {}, token=False)


def buf_curl_list(server: ServerProcess) -> str:
    done = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-methods",
            f"http://{server.address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def test_sigterm_shuts_down_gracefully_and_logs_hold_no_pii(served: ServerProcess) -> None:
    people = People(seed=21).many(5)
    with PiiVault(served.address, served.token, retry=RetryPolicy.disabled()) as client:
        for person in people:
            client.customers.create(pb.Customer(name=person.name, mobile=person.mobile, national_id=person.national_id))
        with pytest.raises(InvalidArgument):  # an invalid call is logged too
            client.customers.create(pb.Customer(name=people[0].name, mobile="1" + people[0].mobile))
    assert served.stop(signal.SIGTERM) == 0
    log = served.log_path.read_bytes()
    events = [json.loads(line) for line in log.splitlines()]
    assert {"server.started", "rpc", "server.stopping", "server.stopped"} <= {e["event"] for e in events}
    assert find_in_bytes(log, needles(people)) == []
    assert served.token.encode() not in log
    database = served.data_dir / "var" / "piivault.db"
    assert find_in_bytes(sqlite_files(database), needles(people)) == []


def test_audit_exports_hold_no_personal_data(served: ServerProcess) -> None:
    people = People(seed=22).many(4)
    with PiiVault(served.address, served.token, retry=RetryPolicy.disabled()) as client:
        for person in people:
            created = client.customers.create(pb.Customer(name=person.name, mobile=person.mobile))
            client.customers.get(created.customer.customer_id, purpose="customer_service")
            client.customers.find(email=person.email, purpose="customer_service")
    served.stop()
    exports = b""
    for output in ("csv", "json", "table"):
        done = subprocess.run(
            [str(BUF.parent / "piivault"), "audit", "query", "--format", output],
            env=served.env,
            capture_output=True,
            timeout=60,
            check=True,
        )
        exports += done.stdout
    assert b"/piivault.v1.CustomerService/GetCustomer" in exports
    assert find_in_bytes(exports, needles(people)) == []
    verified = subprocess.run(
        [str(BUF.parent / "piivault"), "audit", "verify"], env=served.env, capture_output=True, timeout=60, check=False
    )
    assert verified.returncode == 0, verified.stderr
