"""TLS and mTLS through the SDK (in-process server): client certificates as a second way to authenticate.

The server under test requires a client certificate signed by the test CA (grpcio cannot ask for one optionally), so
every client here presents one; a bearer token, when sent, still decides who the caller is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from piivault.cli.main import app as cli
from piivault.client import PiiVault, PiiVaultError, RetryPolicy, TlsConfig
from piivault.v1 import customers_pb2 as pb
from tests.support.certs import Issued, TestPki
from tests.support.people import People, customer_message
from tests.support.scan import sqlite_files, table_dump
from vault.api.server import RunningServer, server_credentials, start_server
from vault.app import Vault
from vault.config import ConfigError, Settings
from vault.storage.db import Database
from vault.storage.models import AuditEventRow, ClientCertificateRow

# What these RPCs answer does not depend on where the KEK lives; the Vault Transit path is covered by the
# integration tests and tests/e2e/test_grpc_api.py, so this module runs with the local keyring only.
pytestmark = pytest.mark.local_keyring

StartServer = Callable[..., RunningServer]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """As in conftest, but with no authentication cache: a revocation is seen by the very next call."""
    return Settings(data_dir=tmp_path / "var", key_settle_seconds=0, token_cache_ttl_seconds=0)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def server_cert(pki: TestPki) -> Issued:
    return pki.server()


@pytest.fixture
def start_tls(vault: Vault, server_cert: Issued) -> Iterator[StartServer]:
    """Starts ``start_server`` with TLS (server certificate for 127.0.0.1) plus whatever settings a test adds."""
    running: list[RunningServer] = []

    def start(**changes: Any) -> RunningServer:
        tls: dict[str, Any] = {"tls_cert": server_cert.cert_path, "tls_key": server_cert.key_path}
        settings = dataclasses.replace(vault.settings, **{**tls, **changes})
        server = start_server(dataclasses.replace(vault, settings=settings), "127.0.0.1:0")
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop(grace=1)


@pytest.fixture
def mtls_server(start_tls: StartServer, pki: TestPki) -> RunningServer:
    return start_tls(tls_client_ca=pki.ca_path, tls_require_client_cert=True)


def connect(server: RunningServer, pki: TestPki, client: Issued | None = None, token: str | None = None) -> PiiVault:
    """The SDK over TLS, trusting the test CA, presenting ``client``'s certificate (mTLS) when given. Calls are sent
    once: a refused handshake must show as UNAVAILABLE, not be retried."""
    tls = TlsConfig(
        root_certificates=pki.ca_pem,
        certificate_chain=client.cert_pem if client else None,
        private_key=client.key_pem if client else None,
    )
    return PiiVault(f"127.0.0.1:{server.port}", token, tls=tls, retry=RetryPolicy.disabled())


def create(client: PiiVault, people: People) -> pb.Customer:
    return client.customers.create(customer_message(people.next()), timeout=10).customer


def refused(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(PiiVaultError) as caught:
        call()
    return caught.value.code


def bearer(vault: Vault, principal: str, role: str) -> str:
    return vault.tokens.create(principal, role).secret


def test_a_registered_certificate_authenticates_with_its_roles_rights(
    vault: Vault, mtls_server: RunningServer, pki: TestPki, people: People
) -> None:
    pos, auditor = pki.client("till-7.shop-42.example"), pki.client("audit-box.example")
    vault.certificates.register(pos.cert_pem, "pos-shop-42", "service")
    vault.certificates.register(auditor.cert_pem, "audit-box", "auditor")
    with connect(mtls_server, pki, pos) as client:
        created = create(client, people)  # no token at all
    assert created.customer_id
    with connect(mtls_server, pki, auditor) as client:
        assert refused(lambda: create(client, people)) == grpc.StatusCode.PERMISSION_DENIED
        events = [
            event
            for reply in client.audit.query_events(action="/piivault.v1.CustomerService/CreateCustomer", timeout=10)
            for event in reply.events
        ]
    # The audit log names the registered principal, never the certificate's subject.
    assert [(e.principal, e.role, e.outcome) for e in events] == [
        ("pos-shop-42", "service", "ok"),
        ("audit-box", "auditor", "denied"),
    ]
    assert created.customer_id in events[0].customer_ids


def test_an_unregistered_certificate_from_the_same_ca_is_unauthenticated(
    vault: Vault, mtls_server: RunningServer, pki: TestPki, people: People
) -> None:
    vault.certificates.register(pki.client("known.example").cert_pem, "known", "service")
    stranger = pki.client("stranger.example")
    with connect(mtls_server, pki, stranger) as client:
        assert refused(lambda: create(client, people)) == grpc.StatusCode.UNAUTHENTICATED
    with vault.database.read() as connection:
        outcomes = connection.execute(select(AuditEventRow.outcome, AuditEventRow.principal)).all()
    assert ("unauthenticated", "") in [tuple(row) for row in outcomes]  # refused calls are audited too


def test_a_revoked_certificate_is_unauthenticated(
    vault: Vault, mtls_server: RunningServer, pki: TestPki, people: People
) -> None:
    pos = pki.client("till-9.example")
    info = vault.certificates.register(pos.cert_pem, "pos-till-9", "service")
    with connect(mtls_server, pki, pos) as client:
        create(client, people)
        vault.certificates.revoke(info.cert_id)
        assert refused(lambda: create(client, people)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_bearer_token_works_over_tls_and_takes_precedence_over_the_certificate(
    vault: Vault, start_tls: StartServer, mtls_server: RunningServer, pki: TestPki, people: People
) -> None:
    service = bearer(vault, "web-shop", "service")
    # TLS without client certificates: tokens as before.
    tls_only = start_tls()
    with connect(tls_only, pki, token=service) as client:
        assert create(client, people).customer_id
        assert refused(lambda: create(client.with_token(None), people)) == grpc.StatusCode.UNAUTHENTICATED
    # mTLS: the token decides whenever one is sent, whatever the certificate says.
    auditor, unregistered = pki.client("auditor.example"), pki.client("unregistered.example")
    vault.certificates.register(auditor.cert_pem, "audit-box", "auditor")
    with connect(mtls_server, pki, auditor, token=service) as client:
        assert create(client, people).customer_id  # service token over an auditor certificate
        wrong = client.with_token("pvt_" + "A" * 43)
        assert refused(lambda: create(wrong, people)) == grpc.StatusCode.UNAUTHENTICATED
    with connect(mtls_server, pki, unregistered, token=service) as client:
        assert create(client, people).customer_id


def test_with_a_required_client_certificate_nobody_connects_without_one(
    vault: Vault, mtls_server: RunningServer, pki: TestPki, tmp_path: Path, people: People
) -> None:
    service = bearer(vault, "web-shop", "service")
    foreign = TestPki(tmp_path / "foreign", "Someone Else's CA")
    foreign_client = foreign.client("foreign.example")
    vault.certificates.register(foreign_client.cert_pem, "foreign", "service")  # registered, but not our CA
    with connect(mtls_server, pki, token=service) as client:
        assert refused(lambda: create(client, people)) == grpc.StatusCode.UNAVAILABLE
    with connect(mtls_server, foreign, foreign_client, token=service) as client:
        assert refused(lambda: create(client, people)) == grpc.StatusCode.UNAVAILABLE
    address = f"127.0.0.1:{mtls_server.port}"
    with PiiVault(address, service, retry=RetryPolicy.disabled()) as plaintext:  # no TLS at all
        assert refused(lambda: create(plaintext, people)) == grpc.StatusCode.UNAVAILABLE


def test_the_certificate_and_its_subject_never_reach_the_database(
    vault: Vault, database: Database, mtls_server: RunningServer, pki: TestPki, people: People
) -> None:
    pos = pki.client("till-0815.zhongshan-road-store.example")
    info = vault.certificates.register(pos.cert_pem, "pos-zhongshan", "service")
    with connect(mtls_server, pki, pos) as client:
        create(client, people)
    vault.writer.close()  # flush and stop the group committer, so that everything written is on disk
    if database.engine.dialect.name == "sqlite":
        assert database.engine.url.database is not None
        stored = sqlite_files(Path(database.engine.url.database))
    else:
        stored = table_dump(database.engine)
    assert info.cert_id.encode() in stored and b"pos-zhongshan" in stored  # the scan does see the registry
    base64_body = b"".join(pos.cert_pem.splitlines()[1:-1])
    needles = {
        "common name": pos.common_name.encode(),
        "organisation": b"Piivault Test Shop",
        "DER": pos.der,
        "PEM body": base64_body[:48],
        "PEM tail": base64_body[-48:],
        "plain SHA-256": pos.sha256,
        "plain SHA-256 hex": pos.sha256.hex().encode(),
    }
    assert [label for label, needle in needles.items() if needle in stored] == []


def test_tls_files_that_cannot_be_used_are_config_errors_naming_the_variable(tmp_path: Path, pki: TestPki) -> None:
    server = pki.server()
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"secret-looking-content-xyz")
    base = Settings(tls_cert=server.cert_path, tls_key=server.key_path)
    cases = [
        (dataclasses.replace(base, tls_cert=tmp_path / "missing.pem"), "PIIVAULT_TLS_CERT"),
        (dataclasses.replace(base, tls_key=tmp_path / "missing.key"), "PIIVAULT_TLS_KEY"),
        (dataclasses.replace(base, tls_cert=garbage), "PIIVAULT_TLS_CERT"),
        (dataclasses.replace(base, tls_key=garbage), "PIIVAULT_TLS_KEY"),
        (dataclasses.replace(base, tls_key=server.cert_path), "PIIVAULT_TLS_KEY"),
        (dataclasses.replace(base, tls_client_ca=garbage, tls_require_client_cert=True), "PIIVAULT_TLS_CLIENT_CA"),
        (dataclasses.replace(base, tls_client_ca=tmp_path / "no-ca.pem", tls_require_client_cert=True), "CLIENT_CA"),
        (dataclasses.replace(base, tls_client_ca=pki.ca_path), "PIIVAULT_TLS_REQUIRE_CLIENT_CERT"),
        (dataclasses.replace(base, tls_key=None), "PIIVAULT_TLS_KEY"),
    ]
    for settings, variable in cases:
        with pytest.raises(ConfigError) as caught:
            server_credentials(settings)
        assert variable in str(caught.value)
        assert "xyz" not in str(caught.value) and "BEGIN" not in str(caught.value)
    assert server_credentials(Settings()) is None
    assert server_credentials(base) is not None


def test_a_key_that_does_not_match_the_certificate_stops_start_up(
    vault: Vault, start_tls: StartServer, pki: TestPki
) -> None:
    other = pki.server("other")
    with pytest.raises(ConfigError) as caught:
        start_tls(tls_key=other.key_path)
    assert "PIIVAULT_TLS_KEY" in str(caught.value)


def test_cert_commands_register_list_and_revoke(database_url: str, tmp_path: Path, pki: TestPki) -> None:
    runner = CliRunner()
    env = {"PIIVAULT_DATA_DIR": str(tmp_path / "var"), "PIIVAULT_DATABASE_URL": database_url}
    assert runner.invoke(cli, ["migrate"], env=env).exit_code == 0
    client = pki.client("cli-client.example")

    added = runner.invoke(
        cli, ["cert", "add", str(client.cert_path), "--principal", "pos-cli", "--role", "service"], env=env
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["cert", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)
    assert (entry["principal"], entry["role"], entry["revoke_time"]) == ("pos-cli", "service", None)
    assert entry["cert_id"].startswith("crt_") and entry["cert_id"] in added.output

    assert runner.invoke(cli, ["cert", "revoke", entry["cert_id"]], env=env).exit_code == 0
    [revoked] = json.loads(runner.invoke(cli, ["cert", "list", "--json"], env=env).stdout)
    assert revoked["revoke_time"] is not None
    again = runner.invoke(cli, ["cert", "revoke", entry["cert_id"]], env=env)
    assert again.exit_code == 2
    bad = runner.invoke(
        cli, ["cert", "add", str(client.key_path), "--principal", "pos-cli", "--role", "service"], env=env
    )
    assert bad.exit_code == 2 and "PRIVATE" not in bad.output
    table = runner.invoke(cli, ["cert", "list"], env=env)
    assert table.exit_code == 0 and "pos-cli" in table.output and "cli-client.example" not in table.output

    database = Database.from_url(database_url)
    try:
        with database.read() as connection:
            rows = connection.execute(select(ClientCertificateRow.principal)).all()
            actions = set(connection.execute(select(AuditEventRow.action)).scalars())
    finally:
        database.dispose()
    assert [row.principal for row in rows] == ["pos-cli"]
    assert {"cli:cert add", "cli:cert list", "cli:cert revoke"} <= actions
