"""`piivault doctor`: a verdict per check, FAIL where a deployment cannot serve, and nothing changed by checking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from tests.support.people import People, caller, profile_of
from tests.transit_server import KEK, SERVING_POLICY, TransitServer
from vault.app import Vault
from vault.config import Settings
from vault.doctor import FAIL, OK, WARN, Verdict, diagnose
from vault.keys.vault_transit import VaultTransitKeyProvider
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


def test_doctor_reads_the_vault_tokens_capabilities(sqlite_url: str, tmp_path: Path) -> None:
    with TransitServer() as transit:
        env = {
            "PIIVAULT_DATA_DIR": str(tmp_path / "var"),
            "PIIVAULT_DATABASE_URL": sqlite_url,
            "PIIVAULT_KEY_PROVIDER": "vault-transit",
            "VAULT_ADDR": transit.url,
        }
        database = Database.from_url(sqlite_url)
        upgrade(database.engine)
        Vault.open(Settings.from_env({**env, "VAULT_TOKEN": transit.root_token}), database=database).close()
        database.dispose()

        def check(token: str) -> Verdict:
            found = [v for v in diagnose({**env, "VAULT_TOKEN": token}) if v.check == "vault token policy"]
            assert len(found) == 1, diagnose({**env, "VAULT_TOKEN": token})
            return found[0]

        transit.add_token("hvs.synthetic-serving-token", SERVING_POLICY)
        assert check("hvs.synthetic-serving-token").result == OK

        root = check(transit.root_token)
        assert (root.result, root.detail) == (WARN, "the token holds more than piivault needs: root token")
        assert transit.root_token not in root.detail

        transit.add_token("hvs.synthetic-no-rotate", {k: v for k, v in SERVING_POLICY.items() if "rotate" not in k})
        no_rotate = check("hvs.synthetic-no-rotate")
        assert no_rotate.result == WARN and f"update on transit/keys/{KEK}/rotate" in no_rotate.detail

        transit.add_token(
            "hvs.synthetic-deleter", {**SERVING_POLICY, f"transit/keys/{KEK}": ["read", "update", "delete"]}
        )
        deleter = check("hvs.synthetic-deleter")
        assert deleter.result == WARN and f"delete on transit/keys/{KEK}" in deleter.detail

        # A token that cannot decrypt fails earlier (the round trip), so the capability check is seen through the
        # provider directly: it names the missing capability.
        transit.add_token("hvs.synthetic-no-decrypt", {k: v for k, v in SERVING_POLICY.items() if "decrypt" not in k})
        provider = VaultTransitKeyProvider(transit.url, token="hvs.synthetic-no-decrypt", key_name=KEK)
        try:
            assert provider.token_policy().missing == (f"update on transit/decrypt/{KEK}",)
        finally:
            provider.close()

        transit.set_down(True)
        unreachable = {v.check: v for v in diagnose({**env, "VAULT_TOKEN": transit.root_token})}
        assert unreachable["key provider"].result == FAIL
        assert "vault token policy" not in unreachable
        transit.set_down(False)


def test_doctor_fails_a_schema_behind_the_code(database_url: str, tmp_path: Path) -> None:
    env = {"PIIVAULT_DATA_DIR": str(tmp_path / "var"), "PIIVAULT_DATABASE_URL": database_url}
    database = Database.from_url(database_url)
    upgrade(database.engine, "0006")  # one migration behind
    try:
        verdict = next(v for v in diagnose(env) if v.check == "database")
        assert verdict.result == FAIL
        assert "at schema 0006" in verdict.detail and "piivault migrate" in verdict.detail
        upgrade(database.engine)
        assert next(v for v in diagnose(env) if v.check == "database").result == OK
    finally:
        database.dispose()
