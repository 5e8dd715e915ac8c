"""`piivault doctor`: a verdict per check, FAIL where a deployment cannot serve, and nothing changed by checking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.doctor import FAIL, OK, diagnose
from vault.storage.db import Database
from vault.storage.migrate import upgrade
from vault.storage.models import AuditEventRow


def verdicts(env: dict[str, str]) -> dict[str, str]:
    return {v.check: v.result for v in diagnose(env)}


def test_doctor_reports_each_problem(database_url: str, tmp_path: Path) -> None:
    env = {"PIIVAULT_DATA_DIR": str(tmp_path / "var"), "PIIVAULT_DATABASE_URL": database_url}
    assert verdicts(env)["database"] == FAIL  # not migrated yet
    database = Database.from_url(database_url)
    upgrade(database.engine)
    vault = Vault.open(Settings.from_env(env), database=database)
    vault.customers.create(caller(), "", profile_of(People(seed=2).next()))
    vault.close()
    healthy = verdicts(env)
    assert {check: healthy[check] for check in ("database", "key provider", "keyring permissions", "audit chain")} == {
        "database": OK,
        "key provider": OK,
        "keyring permissions": OK,
        "audit chain": OK,
    }
    assert healthy["clock skew"] == OK
    with database.write() as connection:
        connection.execute(update(AuditEventRow).where(AuditEventRow.seq == 1).values(outcome="denied"))
    assert verdicts(env)["audit chain"] == FAIL
    (tmp_path / "var" / "keyring.json").chmod(0o644)
    assert verdicts(env)["keyring permissions"] == FAIL
    database.dispose()


def test_the_command_exits_non_zero_on_failure(tmp_path: Path) -> None:
    piivault = str(Path(sys.executable).parent / "piivault")
    env = {**os.environ, "PIIVAULT_DATA_DIR": str(tmp_path / "var")}
    failing = subprocess.run([piivault, "doctor", "--json"], env=env, capture_output=True, timeout=120, check=False)
    assert failing.returncode == 1 and b'"database"' in failing.stdout
    subprocess.run([piivault, "migrate"], env=env, capture_output=True, timeout=120, check=True)
    subprocess.run([piivault, "token", "list"], env=env, capture_output=True, timeout=120, check=True)  # keys made
    passing = subprocess.run([piivault, "doctor"], env=env, capture_output=True, timeout=120, check=False)
    assert passing.returncode == 0, passing.stdout.decode()
