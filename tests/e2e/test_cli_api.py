"""``piivault audit`` against a running vault through the SDK (``--address``/PIIVAULT_ADDRESS), not the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.queries import AuditQueries, EventFilter
from piivault.cli.main import app as cli
from piivault.client import PiiVault
from tests.support.people import People, customer_message
from vault.app import Vault

pytestmark = pytest.mark.local_keyring


def test_audit_commands_through_the_api(
    vault: Vault, address: str, client: PiiVault, people: People, tmp_path: Path, database_url: str
) -> None:
    for person in people.many(3):
        created = client.customers.create(customer_message(person)).customer
        client.customers.get(created.customer_id, purpose="customer_service")
    runner = CliRunner()
    api = {"PIIVAULT_ADDRESS": address, "PIIVAULT_TOKEN": vault.tokens.create("audit-cli", "auditor").secret}

    queried = runner.invoke(cli, ["audit", "query", "--principal", "pos-test", "--format", "json"], env=api)
    assert queried.exit_code == 0, queried.output
    rows = [json.loads(line) for line in queried.stdout.splitlines()]
    assert [r["action"].rsplit("/", 1)[1] for r in rows] == ["CreateCustomer", "GetCustomer"] * 3
    # The same rows as the in-process query of the same database prints.
    local = {"PIIVAULT_DATA_DIR": str(vault.settings.data_dir), "PIIVAULT_DATABASE_URL": database_url}
    in_process = runner.invoke(cli, ["audit", "query", "--principal", "pos-test", "--format", "json"], env=local)
    assert in_process.exit_code == 0, in_process.output
    assert [json.loads(line) for line in in_process.stdout.splitlines()] == rows
    limited = runner.invoke(cli, ["audit", "query", "--limit", "2", "--format", "csv"], env=api)
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 3  # the header and two events

    saved = runner.invoke(cli, ["audit", "checkpoint"], env=api)
    assert saved.exit_code == 0, saved.output
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text(saved.stdout)
    verified = runner.invoke(cli, ["audit", "verify", "--checkpoint", str(checkpoint)], env=api)
    assert verified.exit_code == 0 and "intact" in verified.output, verified.output
    forged = json.loads(saved.stdout) | {"head_mac": "00" * 32}  # a checkpoint the chain does not contain
    checkpoint.write_text(json.dumps(forged))
    broken = runner.invoke(cli, ["audit", "verify", "--checkpoint", str(checkpoint)], env=api)
    assert broken.exit_code == 1 and "broken" in broken.output, broken.output

    # The vault audited the API calls under the token's principal (no `cli:` event of a local operator).
    mine = [e for chunk in AuditQueries(vault.database).events(EventFilter(principal="audit-cli")) for e in chunk]
    assert [e.action.rsplit("/", 1)[1] for e in mine] == [
        "QueryEvents",
        "QueryEvents",
        "GetCheckpoint",
        "VerifyChain",
        "VerifyChain",
    ]

    denied = runner.invoke(cli, ["audit", "query"], env={**api, "PIIVAULT_TOKEN": client_token(vault)})
    assert denied.exit_code == 2 and "PERMISSION_DENIED" in denied.output
    unreachable = runner.invoke(cli, ["audit", "verify", "--address", "127.0.0.1:1"], env=api)
    assert unreachable.exit_code == 2 and "UNAVAILABLE" in unreachable.output


def client_token(vault: Vault) -> str:
    return vault.tokens.create("pos-cli", "service").secret
