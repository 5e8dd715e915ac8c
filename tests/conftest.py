"""Shared fixtures: databases (SQLite always; PostgreSQL when PIIVAULT_TEST_POSTGRES_URL is set), vaults, servers."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest
from sqlalchemy.engine import make_url

from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support import canary
from tests.support.people import People
from tests.transit_server import TransitServer
from vault.api.server import RunningServer, start_server
from vault.app import Vault
from vault.auth.tokens import IssuedToken
from vault.config import Settings
from vault.keys.local import LocalKeyringProvider
from vault.keys.provider import KeyProvider
from vault.keys.vault_transit import VaultTransitKeyProvider
from vault.storage.db import Database, normalize_url
from vault.storage.migrate import upgrade

POSTGRES_ENV = "PIIVAULT_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PIIVAULT_REQUIRE_POSTGRES"  # set by .ci/run: a skipped PostgreSQL test fails the run


def pytest_configure(config: pytest.Config) -> None:
    canary.install(config)  # the canary leak scan at the end of the session (tests/support/canary.py)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under .ci/run a skipped PostgreSQL test, or none at all, fails the run."""
    if not os.environ.get(REQUIRE_POSTGRES_ENV):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return

    def postgres_reports(outcome: str) -> list[pytest.TestReport]:
        return [r for r in reporter.stats.get(outcome, []) if "postgres" in getattr(r, "keywords", {})]

    ran = postgres_reports("passed") + postgres_reports("failed")
    skipped = postgres_reports("skipped")
    reporter.write_line(f"PostgreSQL tests: {len(ran)} ran, {len(skipped)} skipped")
    if skipped or not ran:
        reporter.write_line("CI requires every PostgreSQL test to run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Modules marked `local_keyring` test nothing that depends on where the KEK lives: their Vault Transit variants
    # would only repeat the local ones.
    repeats = [
        item
        for item in items
        if item.get_closest_marker("local_keyring")
        and getattr(getattr(item, "callspec", None), "params", {}).get("key_provider") == "vault-transit"
    ]
    if repeats:
        config.hook.pytest_deselected(items=repeats)
        items[:] = [item for item in items if item not in repeats]
    if os.environ.get(POSTGRES_ENV):
        return
    if os.environ.get(REQUIRE_POSTGRES_ENV):
        raise pytest.UsageError(f"{REQUIRE_POSTGRES_ENV} is set but {POSTGRES_ENV} is not: PostgreSQL tests must run")
    skip = pytest.mark.skip(reason=f"{POSTGRES_ENV} is not set")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


class PostgresDatabases:
    """Creates throw-away databases on the server named by PIIVAULT_TEST_POSTGRES_URL and drops them afterwards."""

    def __init__(self, admin_url: str) -> None:
        parsed = make_url(normalize_url(admin_url))
        self._admin = parsed
        self._created: list[str] = []
        self._template: str | None = None

    def _admin_connect(self) -> psycopg.Connection[tuple[object, ...]]:
        url = self._admin
        return psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
            autocommit=True,
        )

    def create(self, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (``CREATE DATABASE … TEMPLATE``: a file copy on the server,
        cheaper than migrating a database from nothing)."""
        name = "piivault_test_" + secrets.token_hex(6)
        source = f' TEMPLATE "{template}"' if template else ""
        with self._admin_connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"{source}')
        self._created.append(name)
        return self._admin.set(database=name).render_as_string(hide_password=False)

    def migrated_template(self) -> str:
        """The name of a database migrated to head once per session, which no connection stays open on (a template
        in use cannot be copied)."""
        if self._template is None:
            url = self.create()
            database = Database.from_url(url)
            try:
                upgrade(database.engine)
            finally:
                database.dispose()
            self._template = str(make_url(url).database)
        return self._template

    def urls(self) -> list[str]:
        return [self._admin.set(database=name).render_as_string(hide_password=False) for name in self._created]

    def drop_all(self) -> None:
        """Each DROP DATABASE waits for a checkpoint; dropped from several connections at once, the drops share them
        (a few hundred databases: about 40 s one by one, a fraction of that in parallel)."""

        def drop(names: list[str]) -> None:
            with self._admin_connect() as connection:
                for name in names:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        lanes = 8
        with ThreadPoolExecutor(max_workers=lanes) as pool:
            for done in [pool.submit(drop, self._created[lane::lanes]) for lane in range(lanes)]:
                done.result()
        self._created.clear()


@pytest.fixture(scope="session")
def postgres_databases(request: pytest.FixtureRequest) -> Iterator[PostgresDatabases]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    databases = PostgresDatabases(url)
    yield databases
    scan = canary.plugin_of(request.config)
    if scan is not None:
        scan.dump_postgres(databases.urls())  # the canary scan searches every table of every database: dump first
    databases.drop_all()


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'piivault.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per session, copied for every test that uses ``database``."""
    path = tmp_path_factory.mktemp("template") / "piivault.db"
    database = Database.from_url(f"sqlite:///{path}")
    try:
        upgrade(database.engine)
    finally:
        database.dispose()  # checkpoints the WAL into the file: the file alone is the whole database
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database on either backend: empty, or — when the test also uses ``database`` — already migrated to head,
    copied from a session template (migrating from nothing for each of several hundred tests took minutes; the
    migrations themselves are tested from nothing in test_migrations.py)."""
    migrated = "database" in request.fixturenames
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        if migrated:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "piivault.db")
    else:
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = databases.create(databases.migrated_template() if migrated else None)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _sqlite_url(tmp_path)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database.from_url(database_url)  # migrated already (see ``database_url``)
    yield db
    db.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No settle time: tests rotate and retire versions back to back in one process (see KeyRotation). No find latency
    # floor: it costs 4 ms a lookup and is tested on its own (tests/integration/test_lookup_timing.py); served
    # processes (tests/e2e) keep the default.
    return Settings(data_dir=tmp_path / "var", key_settle_seconds=0, analytics_settle_seconds=0, find_floor_ms=0)


@pytest.fixture(scope="session")
def transit_server() -> Iterator[TransitServer]:
    with TransitServer() as server:
        yield server


@pytest.fixture(params=["local", "vault-transit"])
def key_provider(request: pytest.FixtureRequest, settings: Settings) -> Iterator[KeyProvider]:
    """Every test that uses a vault runs once with the local keyring and once with Vault Transit (test server)."""
    provider: KeyProvider
    if request.param == "local":
        provider = LocalKeyringProvider.open_or_create(settings.keyring_path)
    else:
        server: TransitServer = request.getfixturevalue("transit_server")
        # A key per test, so that one test's rotation cannot leak into another.
        key_name = "piivault-kek-" + secrets.token_hex(4)
        provider = VaultTransitKeyProvider.connect(server.url, token=server.root_token, key_name=key_name)
    yield provider
    provider.close()


@pytest.fixture
def vault(settings: Settings, database: Database, key_provider: KeyProvider) -> Iterator[Vault]:
    opened = Vault.open(settings, database=database, provider=key_provider)
    yield opened
    opened.close()


@pytest.fixture
def people() -> People:
    return People(seed=3)


@pytest.fixture
def server(vault: Vault) -> Iterator[RunningServer]:
    running = start_server(vault, "127.0.0.1:0")
    yield running
    running.stop(grace=1)


@pytest.fixture
def service_token(vault: Vault) -> IssuedToken:
    return vault.tokens.create("pos-test", "service")


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.CustomerServiceStub:
    return pb_grpc.CustomerServiceStub(channel)


@pytest.fixture
def auth(service_token: IssuedToken) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {service_token.secret}"),)
