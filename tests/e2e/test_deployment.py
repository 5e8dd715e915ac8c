"""The README's deployment steps, run as written: two replicas over one PostgreSQL database and one Vault.

The test reads the shell block marked ``deployment-steps`` in README.md and runs its lines in order. Only the site
settings change: the database is a fresh PostgreSQL test database, Vault is the Transit test server with a token
holding exactly the README's policy, and the two replicas listen on loopback ports with their own data directories
(on one machine they cannot share ``0.0.0.0:50051``). A line the test does not know how to run fails it, so the
README cannot drift from what is tested. Then: a customer written through one replica is read through the other,
calls balanced over both by the client's ``round_robin`` policy all succeed, and the one audit chain verifies.

Also here: ``piivault replay-ledger`` re-erasing, in a restored database, a customer erased through another replica.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from piivault.client import PiiVault
from piivault.v1 import customers_pb2 as pb
from tests.conftest import PostgresDatabases
from tests.support.people import People, caller
from tests.support.server import ServerProcess, free_port, run_cli
from tests.transit_server import SERVING_POLICY, TransitServer
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import Profile
from vault.dsar.models import DsarType

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
SITE_SETTINGS = {"PIIVAULT_DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN"}  # what a site changes; the rest is literal
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(\S*)$")


def deployment_steps() -> list[str]:
    text = README.read_text(encoding="utf-8")
    marker = text.index("<!-- deployment-steps")
    block = re.search(r"```sh\n(.*?)```", text[marker:], re.DOTALL)
    assert block is not None, "README: the deployment-steps marker must be followed by a ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


class Replica(ServerProcess):
    """A replica started from the README's serve line, with this machine's port and data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str], command: list[str]) -> None:
        super().__init__(data_dir, env, command)

    def start(self) -> None:  # the README's steps did the migration and the token already
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)
        log.close()
        self.wait_serving()


@pytest.fixture
def transit() -> Iterator[TransitServer]:
    with TransitServer() as server:
        yield server


@pytest.mark.postgres
def test_two_replicas_one_postgresql_as_the_readme_says(
    tmp_path: Path, postgres_databases: PostgresDatabases, transit: TransitServer
) -> None:
    transit.add_token("hvs.synthetic-deployment-token", SERVING_POLICY)
    site = {
        "PIIVAULT_DATABASE_URL": postgres_databases.create(),
        "VAULT_ADDR": transit.url,
        "VAULT_TOKEN": "hvs.synthetic-deployment-token",
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIIVAULT_", "VAULT_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "ops"
    work.mkdir()
    replicas: list[Replica] = []
    try:
        for line in deployment_steps():
            words = shlex.split(line)
            if words[0] == "export":
                for word in words[1:]:
                    match = ASSIGNMENT.match(word)
                    assert match, f"README: cannot read the assignment {word!r}"
                    name, value = match.groups()
                    env[name] = site[name] if name in SITE_SETTINGS else value
                continue
            prefix = [w for w in words if ASSIGNMENT.match(w)]
            command = words[len(prefix) :]
            if command == ["piivault", "serve"]:
                for name in ("a", "b"):
                    replica_env = dict(env)
                    for word in prefix:
                        key, value = word.split("=", 1)
                        replica_env[key] = value
                    assert replica_env["PIIVAULT_LISTEN"].endswith(":50051")
                    replica_env["PIIVAULT_LISTEN"] = f"127.0.0.1:{free_port()}"  # two replicas, one machine
                    replica_env["PIIVAULT_DATA_DIR"] = str(tmp_path / f"replica-{name}" / "var")
                    replica = Replica(tmp_path / f"replica-{name}", {}, [str(BIN / "piivault"), "serve"])
                    replica.env = replica_env
                    replica.address = replica_env["PIIVAULT_LISTEN"]
                    replica.start()
                    replicas.append(replica)
                continue
            assert command[0] == "piivault", f"README: the deployment test does not know how to run {line!r}"
            done = subprocess.run(
                ["bash", "-c", line], env=env, cwd=work, capture_output=True, timeout=120, check=False
            )
            assert done.returncode == 0, f"{line!r} failed: {done.stderr.decode()[-1500:]}"
        assert len(replicas) == 2, "README: the deployment steps must start the replicas with `piivault serve`"
        assert env["PIIVAULT_KEY_PROVIDER"] == "vault-transit"
        token = (work / "pos.token").read_text().strip()
        people = People(seed=88).many(40)

        with PiiVault(replicas[0].address, token) as via_a, PiiVault(replicas[1].address, token) as via_b:
            created = via_a.customers.create(pb.Customer(name=people[0].name, mobile=people[0].mobile))
            read = via_b.customers.get(created.customer.customer_id, purpose="customer_service")
            assert read.customer.name == people[0].name  # one database, one KEK: B decrypts what A wrote

        # The README's client-side balancing: one channel, both replicas, round_robin.
        target = "ipv4:" + ",".join(replica.address for replica in replicas)
        balanced = PiiVault(
            target, token, allow_insecure=True, channel_options=[("grpc.lb_policy_name", "round_robin")]
        )
        with balanced:
            ids = [
                balanced.customers.create(pb.Customer(name=person.name, mobile=person.mobile)).customer.customer_id
                for person in people[1:]
            ]
            for customer_id in ids:
                balanced.customers.get(customer_id, purpose="customer_service")
            # One replica goes away (SIGTERM: NOT_SERVING, GOAWAY, drain); the balanced channel carries on with B
            # (the SDK retries UNAVAILABLE for reads, within the call's deadline).
            assert replicas[0].stop(signal.SIGTERM) == 0
            for customer_id in ids:
                reply = balanced.customers.get(customer_id, purpose="customer_service", timeout=10)
                assert reply.customer.customer_id == customer_id
        assert replicas[1].stop(signal.SIGTERM) == 0
        started = ['"server.started"' in replica.log_path.read_text() for replica in replicas]
        assert started == [True, True]
    finally:
        for replica in replicas:
            replica.stop(signal.SIGKILL)

    settings = Settings.from_env({**env, "PIIVAULT_DATA_DIR": str(tmp_path / "verify")})
    vault = Vault.open(settings)
    try:
        report = vault.audit_verifier.verify()
        assert report.intact, report
        assert report.events_checked >= 2 * len(people)
        assert len(vault.customers.page(caller(), 500, "").customers) == len(people)
    finally:
        vault.close()


def test_replay_ledger_re_erases_what_another_replica_erased(tmp_path: Path) -> None:
    """README "Backup and restore": the restored database gets every replica's erasures before anyone serves."""
    data = tmp_path / "var"
    env = {**os.environ, "PIIVAULT_DATA_DIR": str(data), "PIIVAULT_ERASURE_LEDGER": str(tmp_path / "ledger-a.jsonl")}
    run_cli(["migrate"], env)
    people = People(seed=89).many(2)
    vault = Vault.open(Settings.from_env(env))
    ids = [vault.customers.create(caller(), "", _profile(p.name, p.mobile)).customer_id for p in people]
    vault.close()
    database_file = data / "piivault.db"
    shutil.copy(database_file, tmp_path / "backup.db")

    # Replica B (its own ledger) erases the first customer.
    replica_b = Settings.from_env({**env, "PIIVAULT_ERASURE_LEDGER": str(tmp_path / "ledger-b.jsonl")})
    vault = Vault.open(replica_b)
    officer = caller("dpo-1", "dpo", "cli:dsar erase", purpose="dsar")
    request = vault.dsar.open(officer, None, ids[0], DsarType.ERASURE)
    vault.dsar.verify(officer, request.request_id)
    vault.dsar.erase(officer, request.request_id)
    vault.close()

    shutil.copy(tmp_path / "backup.db", database_file)
    for suffix in ("-wal", "-shm"):
        Path(str(database_file) + suffix).unlink(missing_ok=True)
    vault = Vault.open(Settings.from_env(env))  # replica A replays only its own ledger, which never saw the erasure
    try:
        assert len(vault.customers.page(caller(), 500, "").customers) == 2
    finally:
        vault.close()
    done = subprocess.run(
        [str(BIN / "piivault"), "replay-ledger", str(tmp_path / "ledger-b.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 customers erased again" in done.stderr
    vault = Vault.open(Settings.from_env(env))
    try:
        remaining = [c.customer_id for c in vault.customers.page(caller(), 500, "").customers]
    finally:
        vault.close()
    assert remaining == [ids[1]]
    missing = subprocess.run(
        [str(BIN / "piivault"), "replay-ledger", str(tmp_path / "no-such.jsonl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and "no such ledger file" in missing.stderr


def _profile(name: str, mobile: str) -> Profile:
    return Profile(name=name, mobile=mobile)
