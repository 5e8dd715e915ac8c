"""Dependency faults under load: PostgreSQL restarted or cut off, SQLite out of space, Vault slow or down.

Every test drives the in-process gRPC server, so the codes checked are the ones clients see, and ends the same way:
every failed call was UNAVAILABLE with the fixed message (never INTERNAL, never SQL or values), no call hung until the
client's deadline, the service works again by itself once the dependency is back, retrying each failed request (same
request id / order id) lands it exactly once, the database holds nothing half written, and the audit chain verifies.

PostgreSQL faults use a private cluster (``tests.support.pg_cluster``), never the shared server, and a loopback proxy
(``tests.support.tcp_proxy``) to make it unreachable without stopping it. ``test_vault_outage`` covers Vault stopping
at the service level; here Vault is slow or down under concurrent gRPC calls.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from piivault.v1 import purchases_pb2 as ppb
from piivault.v1 import purchases_pb2_grpc as ppb_grpc
from tests.support import pg_cluster
from tests.support.people import People, Person, customer_message
from tests.support.pg_cluster import PrivateCluster
from tests.support.tcp_proxy import TcpProxy
from tests.transit_server import TransitServer
from vault.api.server import RunningServer, start_server
from vault.app import Vault
from vault.config import Settings
from vault.errors import Unavailable
from vault.keys.provider import KeyProvider
from vault.keys.vault_transit import VaultTransitKeyProvider
from vault.storage.db import CONNECT_TIMEOUT_SECONDS, REQUEST_ANSWER_SECONDS, Database, answering_within
from vault.storage.migrate import upgrade
from vault.storage.models import (
    AuditEventRow,
    AuditSubjectRow,
    BlindIndexRow,
    CustomerRow,
    PseudonymRow,
    PurchaseRow,
)

# Far beyond any bound below: a call that reaches it hung.
CLIENT_DEADLINE_SECONDS = 30.0
# A call during a database fault may wait for one answer (cut after REQUEST_ANSWER_SECONDS), then for one connection
# attempt, then for one more to record its failure in the audit log; the rest is slack for a busy 2-core machine.
DATABASE_FAIL_FAST_SECONDS = REQUEST_ANSWER_SECONDS + 2 * CONNECT_TIMEOUT_SECONDS + 3.0
# What the service promises when Vault is unreachable or hangs (see vault.keys.vault_transit).
VAULT_FAIL_FAST_SECONDS = 2.0
RECOVERY_SECONDS = 20.0
FULL_PROFILE_KINDS = {"mobile", "email", "national_id", "member_id", "external_ref"}
CREATE = "/piivault.v1.CustomerService/CreateCustomer"
RECORD_PURCHASE = "/piivault.v1.PurchaseService/RecordPurchase"


# -- the service under test and its clients ------------------------------------------------------------------------


@dataclass
class Outcome:
    op: str
    started: float
    seconds: float
    code: grpc.StatusCode
    details: str
    key: str  # create: the request id; purchase: the order id


@dataclass
class Service:
    """An in-process vault behind its gRPC server, with a service token, and what the tests created through it."""

    vault: Vault
    running: RunningServer
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]
    people: People = field(default_factory=lambda: People(seed=88))
    customers: dict[str, str] = field(default_factory=dict)  # request id -> customer id, for every create that landed
    persons: dict[str, Person] = field(default_factory=dict)  # request id -> who was sent
    orders: dict[str, str] = field(default_factory=dict)  # order id -> customer id, for every purchase sent
    recorded: set[str] = field(default_factory=set)  # order ids that landed
    lock: threading.Lock = field(default_factory=threading.Lock)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def customer_stub(self) -> pb_grpc.CustomerServiceStub:
        return pb_grpc.CustomerServiceStub(self.channel)

    @property
    def purchase_stub(self) -> ppb_grpc.PurchaseServiceStub:
        return ppb_grpc.PurchaseServiceStub(self.channel)

    def new_request(self) -> str:
        with self.lock:
            request_id = f"fault-{next(self.serial)}"
            self.persons[request_id] = self.people.next()
        return request_id

    def create(self, request_id: str) -> str:
        reply = self.customer_stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=customer_message(self.persons[request_id]), request_id=request_id),
            metadata=self.metadata,
            timeout=CLIENT_DEADLINE_SECONDS,
        )
        with self.lock:
            self.customers[request_id] = reply.customer.customer_id
        return str(reply.customer.customer_id)

    def get(self, request_id: str) -> None:
        customer_id = self.customers[request_id]
        reply = self.customer_stub.GetCustomer(
            pb.GetCustomerRequest(customer_id=customer_id, purpose="customer_service"),
            metadata=self.metadata,
            timeout=CLIENT_DEADLINE_SECONDS,
        )
        assert reply.customer.customer_id == customer_id

    def find(self, request_id: str) -> None:
        mobile = self.persons[request_id].mobile
        reply = self.customer_stub.FindCustomers(
            pb.FindCustomersRequest(mobile=mobile, purpose="customer_service"),
            metadata=self.metadata,
            timeout=CLIENT_DEADLINE_SECONDS,
        )
        assert [c.customer_id for c in reply.customers] == [self.customers[request_id]]

    def new_order(self, request_id: str) -> str:
        with self.lock:
            order_id = f"F-{next(self.serial)}"
            self.orders[order_id] = self.customers[request_id]
        return order_id

    def purchase(self, order_id: str) -> None:
        when = timestamp_pb2.Timestamp(seconds=1_700_000_000)
        purchase = ppb.Purchase(
            source="pos", order_id=order_id, purchase_time=when, amount_minor=1999, currency="CNY", store_id="S-1"
        )
        self.purchase_stub.RecordPurchase(
            ppb.RecordPurchaseRequest(customer_id=self.orders[order_id], purchase=purchase),
            metadata=self.metadata,
            timeout=CLIENT_DEADLINE_SECONDS,
        )
        with self.lock:
            self.recorded.add(order_id)

    def health(self) -> int:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var", key_settle_seconds=0, analytics_settle_seconds=0, lookups_per_minute=100_000
    )


@pytest.fixture
def open_service(settings: Settings) -> Iterator[Callable[..., Service]]:
    opened: list[tuple[Service, Database]] = []

    def open_(database_url: str, provider: KeyProvider | None = None) -> Service:
        database = Database.from_url(database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database, provider=provider)
        running = start_server(vault, "127.0.0.1:0")
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        token = vault.tokens.create("pos-fault", "service").secret
        service = Service(vault, running, channel, (("authorization", f"Bearer {token}"),))
        opened.append((service, database))
        return service

    yield open_
    for service, database in opened:
        service.channel.close()
        service.running.stop(grace=1)
        service.vault.close()
        database.dispose()


def baseline(service: Service, count: int = 3) -> list[str]:
    """Customers created, read and found while everything is healthy (their request ids); the load reads these."""
    created = []
    for _ in range(count):
        request_id = service.new_request()
        service.create(request_id)
        service.find(request_id)
        created.append(request_id)
    return created


# -- load -----------------------------------------------------------------------------------------------------------


class Load:
    """Client threads that each repeat: create a customer, read one, find it, record a purchase — and note every
    call's code and duration. Reads go to the baseline customers, so they do not depend on creates that failed."""

    def __init__(self, service: Service, known: list[str], threads: int = 3, pause: float = 0.03) -> None:
        self.service = service
        self.known = known
        # Between calls, and longer after a failure (as a client backs off): enough calls to meet every fault, few
        # enough to retry them all quickly afterwards.
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self.broken: list[str] = []
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(CLIENT_DEADLINE_SECONDS + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread never returned"
        assert self.broken == [], self.broken  # a reply with the wrong content
        return self.outcomes

    def _call(self, op: str, key: str, call: Callable[[str], object]) -> None:
        started = time.monotonic()
        code, details = grpc.StatusCode.OK, ""
        try:
            call(key)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        self.outcomes.append(Outcome(op, started, time.monotonic() - started, code, details, key))
        time.sleep(self.pause if code == grpc.StatusCode.OK else 10 * self.pause)

    def _run(self, n: int) -> None:
        try:
            self._repeat(n)
        except Exception as error:  # noqa: BLE001 - reported by stop(), in the test's thread
            self.broken.append(repr(error))

    def _repeat(self, n: int) -> None:
        service = self.service
        for step in itertools.count(n):  # each thread starts at another call, so every kind meets a fault early
            if self._stopping.is_set():
                return
            known = self.known[step // 4 % len(self.known)]
            op = ("create", "get", "find", "purchase")[step % 4]
            if op == "create":
                self._call(op, service.new_request(), service.create)
            elif op == "purchase":
                self._call(op, service.new_order(known), service.purchase)
            else:
                self._call(op, known, service.get if op == "get" else service.find)

    def wait_for(self, predicate: Callable[[list[Outcome]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(list(self.outcomes)):
            assert time.monotonic() < deadline, "the load never saw what the test waited for"
            time.sleep(0.05)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.code != grpc.StatusCode.OK]


# -- the checks every fault test ends with ------------------------------------------------------------------------


def assert_failed_fast(outcomes: list[Outcome], bound: float) -> None:
    failed = failures(outcomes)
    assert failed, "the fault never reached a call: the test proved nothing"
    assert {o.code for o in failed} == {grpc.StatusCode.UNAVAILABLE}, sorted({o.code.name for o in failed})
    # The fixed sentence: no SQL, no driver text, no values.
    assert {o.details for o in failed} == {Unavailable.message}
    slowest = max(outcomes, key=lambda o: o.seconds)
    assert slowest.seconds < bound, f"{slowest.op} took {slowest.seconds:.1f}s (bound {bound:.1f}s)"


def wait_until_healthy(service: Service, known: list[str]) -> float:
    """Seconds until a create, a read, a find and a purchase all succeed again — with no restart of the service."""
    started = time.monotonic()
    # The same ids on every attempt, like a client retrying: an attempt that failed may still have committed.
    request_id, order_id = service.new_request(), service.new_order(known[0])
    while True:
        try:
            service.create(request_id)
            service.get(known[0])
            service.find(request_id)
            service.purchase(order_id)
            return time.monotonic() - started
        except grpc.RpcError as error:
            code = error.code()
        assert code == grpc.StatusCode.UNAVAILABLE, code
        assert time.monotonic() - started < RECOVERY_SECONDS, "the service did not recover by itself"
        time.sleep(0.2)


def retry_failed_writes(service: Service, outcomes: list[Outcome]) -> None:
    """Clients retry what failed, with the same request id / order id: each lands exactly once (an ambiguous commit —
    cut after the server committed — is answered from the first attempt; ``assert_nothing_half_written`` finds any
    second customer)."""
    for outcome in failures(outcomes):
        if outcome.op == "create":
            service.create(outcome.key)
        elif outcome.op == "purchase":
            service.purchase(outcome.key)


def assert_nothing_half_written(service: Service) -> None:
    """Every customer whole (wrapped DEK, every field, every blind index, its create audited); exactly the customers
    and purchases the clients were told about; every purchase under a pseudonym and audited; the chain verifies."""
    database = service.vault.database
    with database.read() as connection:
        customers = connection.execute(select(CustomerRow.__table__)).all()
        kinds: dict[str, set[str]] = {}
        for digest_kind, customer_id in connection.execute(select(BlindIndexRow.kind, BlindIndexRow.customer_id)):
            kinds.setdefault(customer_id, set()).add(digest_kind)
        audited = dict(
            connection.execute(
                select(AuditSubjectRow.customer_id, func.count())
                .join(AuditEventRow, AuditEventRow.seq == AuditSubjectRow.seq)
                .where(AuditEventRow.action == CREATE, AuditEventRow.outcome == "ok")
                .group_by(AuditSubjectRow.customer_id)
            ).all()
        )
        purchases = connection.execute(
            select(PurchaseRow.order_id, PseudonymRow.customer_id).join(
                PseudonymRow, PseudonymRow.pseudonym == PurchaseRow.pseudonym, isouter=True
            )
        ).all()
        purchase_events = dict(
            connection.execute(
                select(AuditSubjectRow.customer_id, func.count())
                .join(AuditEventRow, AuditEventRow.seq == AuditSubjectRow.seq)
                .where(AuditEventRow.action == RECORD_PURCHASE, AuditEventRow.outcome == "ok")
                .group_by(AuditSubjectRow.customer_id)
            ).all()
        )
    assert {c.customer_id for c in customers} == set(service.customers.values())
    for customer in customers:
        assert customer.wrapped_dek and customer.kek_version >= 1
        assert None not in (customer.name_ct, customer.mobile_ct, customer.national_id_ct, customer.external_refs_ct)
        assert kinds.get(customer.customer_id) == FULL_PROFILE_KINDS, customer.customer_id
        assert audited.get(customer.customer_id, 0) >= 1, customer.customer_id
    assert set(kinds) <= {c.customer_id for c in customers}  # no index left behind by a create that rolled back
    assert {order_id for order_id, _ in purchases} == service.recorded
    per_customer: dict[str, int] = {}
    for order_id, customer_id in purchases:
        assert customer_id == service.orders[order_id]
        per_customer[customer_id] = per_customer.get(customer_id, 0) + 1
    for customer_id, count in per_customer.items():
        assert purchase_events.get(customer_id, 0) >= count
    report = service.vault.audit_verifier.verify()
    assert report.intact, report.problem


def finish(service: Service, known: list[str], outcomes: list[Outcome]) -> None:
    wait_until_healthy(service, known)
    retry_failed_writes(service, outcomes)
    assert_nothing_half_written(service)


# -- PostgreSQL -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """One private cluster for the module (each test makes its own database in it).

    Outside pytest's temporary tree: a pytest run started meanwhile resets that tree's top directory to 0700, after
    which the ``postgres`` user (as which pg_ctl runs under root) could no longer reach the data directory.
    """
    assert pg_cluster.available() is None, pg_cluster.available()  # never skip a PostgreSQL test
    base = Path(tempfile.mkdtemp(prefix="piivault-faults-"))
    try:
        with PrivateCluster(base / "pg") as private:
            yield private
    finally:
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(cluster: PrivateCluster, name: str) -> None:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')


@pytest.mark.postgres
def test_postgres_waits_are_bounded_on_the_request_path_only(cluster: PrivateCluster) -> None:
    """A call's statement that outlasts its answer budget is cut (and the pool recovers); the same statement outside
    a budget — retention, migrations, the CLI — runs to the end."""
    fresh_database(cluster, "budget")
    database = Database.from_url(f"postgresql://postgres@127.0.0.1:{cluster.port}/budget")
    try:
        with database.read() as connection:
            parameters = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
            assert parameters["connect_timeout"] == str(CONNECT_TIMEOUT_SECONDS)
            assert int(parameters["keepalives_idle"]) > 0
            assert connection.exec_driver_sql("SELECT pg_sleep(1.5), 1").one()[1] == 1  # no budget: not cut
        started = time.monotonic()
        with pytest.raises(OperationalError), answering_within(0.5), database.read() as connection:
            connection.exec_driver_sql("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 2.5
        with answering_within(0.5), database.read() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        database.dispose()


def test_sqlite_write_lock_waits_are_bounded_on_the_request_path_only(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock, or another thread of this one inside a write: a call waits no
    longer than its answer budget (both waits together), then fails with the error the guard answers as UNAVAILABLE;
    outside a budget the writer waits longer (up to 30 s)."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    database = Database.from_url(url)
    upgrade(database.engine)
    other_process = sqlite3.connect(tmp_path / "locked.db", isolation_level=None, check_same_thread=False)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(OperationalError), answering_within(0.3), database.write() as connection:
            connection.exec_driver_sql("UPDATE audit_head SET seq = seq")
        assert 0.25 < time.monotonic() - started < 2.0
        threading.Timer(0.5, other_process.rollback).start()
        with database.write() as connection:  # no budget: waits the half second out
            connection.exec_driver_sql("UPDATE audit_head SET seq = seq")

        inside = threading.Event()
        leave = threading.Event()

        def hold() -> None:
            with database.write():
                inside.set()
                leave.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert inside.wait(10)
        started = time.monotonic()
        with pytest.raises(OperationalError), answering_within(0.3), database.write():
            pass
        assert 0.25 < time.monotonic() - started < 2.0
        leave.set()
        holder.join()
        with answering_within(0.3), database.write() as connection:  # free again: the budget is not in the way
            connection.exec_driver_sql("UPDATE audit_head SET seq = seq")
    finally:
        other_process.close()
        database.dispose()


@pytest.mark.postgres
def test_postgres_restarted_mid_load(cluster: PrivateCluster, open_service: Callable[..., Service]) -> None:
    fresh_database(cluster, "restart")
    service = open_service(f"postgresql://postgres@127.0.0.1:{cluster.port}/restart")
    known = baseline(service)
    with Load(service, known) as load:
        load.wait_for(lambda seen: len(seen) >= 8, timeout=20)
        restarted_at = time.monotonic()
        cluster.restart_immediate()  # every connection drops, in-flight transactions are lost: a crash
        load.wait_for(lambda seen: any(o.started > restarted_at + 1 and o.code == grpc.StatusCode.OK for o in seen), 20)
    outcomes = load.stop()
    assert_failed_fast(outcomes, DATABASE_FAIL_FAST_SECONDS)
    finish(service, known, outcomes)


@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_postgres_unreachable(cluster: PrivateCluster, open_service: Callable[..., Service], fault: str) -> None:
    fresh_database(cluster, fault)
    with TcpProxy("127.0.0.1", cluster.port) as proxy:
        service = open_service(f"postgresql://postgres@127.0.0.1:{proxy.port}/{fault}")
        known = baseline(service)
        with Load(service, known) as load:
            load.wait_for(lambda seen: len(seen) >= 8, timeout=20)
            cut_at = time.monotonic()
            proxy.blackhole() if fault == "blackhole" else proxy.refuse()
            # Until a call that started after the cut (not only those caught in flight) has failed too.
            load.wait_for(lambda seen: any(o.started > cut_at + 0.5 for o in failures(seen)), timeout=30)
            proxy.restore()
        outcomes = load.stop()
        assert_failed_fast(outcomes, DATABASE_FAIL_FAST_SECONDS)
        finish(service, known, outcomes)


@pytest.mark.postgres
def test_health_reports_not_serving_while_postgres_is_unreachable(
    cluster: PrivateCluster, open_service: Callable[..., Service]
) -> None:
    fresh_database(cluster, "health")
    with TcpProxy("127.0.0.1", cluster.port) as proxy:
        service = open_service(f"postgresql://postgres@127.0.0.1:{proxy.port}/health")
        assert service.health() == health_pb2.HealthCheckResponse.SERVING
        known = baseline(service, 1)
        proxy.refuse()
        try:
            deadline = time.monotonic() + 5
            while service.health() == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.2)
            assert service.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            proxy.restore()
        deadline = time.monotonic() + 10
        while service.health() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.health() == health_pb2.HealthCheckResponse.SERVING  # back by itself, no restart
        wait_until_healthy(service, known)


# -- SQLite -----------------------------------------------------------------------------------------------------------


def test_sqlite_disk_full(tmp_path: Path, open_service: Callable[..., Service]) -> None:
    """``PRAGMA max_page_count`` caps the file at its current size on the server's write connections: a write that
    needs a new page fails with SQLITE_FULL, as on a full disk.

    UNAVAILABLE rather than RESOURCE_EXHAUSTED: here RESOURCE_EXHAUSTED means the caller's own lookup budget is spent
    (reason LOOKUP_RATE_EXCEEDED, with RetryInfo), which a client handles by slowing down; a full disk is the service's
    trouble, the request is fine and may be retried as is (nothing was written) once an operator frees space.
    """
    service = open_service(f"sqlite:///{tmp_path / 'full.db'}")
    writer = service.vault.database._write_engine  # the connections that write (see Database.from_url)
    limit = {"pages": 1 << 30}

    @event.listens_for(writer, "checkout")
    def _cap(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    known = baseline(service)
    with writer.connect() as connection:
        limit["pages"] = int(connection.exec_driver_sql("PRAGMA page_count").scalar_one())
    load = Load(service, known, threads=2)
    with load:
        load.wait_for(
            lambda seen: {"create", "purchase"} <= {o.op for o in failures(seen)} and len(failures(seen)) >= 6, 30
        )
        limit["pages"] = 1 << 30  # space is freed
    outcomes = load.stop()
    assert_failed_fast(outcomes, DATABASE_FAIL_FAST_SECONDS)
    finish(service, known, outcomes)


# -- Vault ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def transit() -> Iterator[TransitServer]:
    with TransitServer() as server:
        yield server


@pytest.mark.parametrize("fault", ["slow", "down"])
def test_vault_slow_or_down(
    tmp_path: Path, open_service: Callable[..., Service], transit: TransitServer, fault: str
) -> None:
    """Creates (wrap) and reads of uncached customers (unwrap) fail within the promised 2 s while Vault hangs past the
    provider's deadline or refuses connections; purchases, which need no key, go on; everything recovers."""
    provider = VaultTransitKeyProvider.connect(transit.url, token=transit.root_token)
    try:
        service = open_service(f"sqlite:///{tmp_path / 'vault.db'}", provider)
        known = baseline(service)
        transit.set_latency(0.3)  # slow, but within the deadline: nothing fails
        service.vault.data_keys.drain_pool()
        for request_id in known:
            service.vault.data_keys.forget(service.customers[request_id])
        service.create(service.new_request())  # wraps
        service.get(known[0])  # unwraps
        service.find(known[1])  # unwraps

        load = Load(service, known)
        with load:
            load.wait_for(lambda seen: len(seen) >= 4, timeout=20)
            if fault == "slow":
                transit.set_latency(5)  # each request outlives the provider's 1.5 s deadline
            else:
                transit.set_down(True)
            service.vault.data_keys.drain_pool()
            for request_id in known:
                service.vault.data_keys.forget(service.customers[request_id])
            load.wait_for(lambda seen: {"create", "get", "find"} <= {o.op for o in failures(seen)}, timeout=30)
            transit.set_latency(0)
            transit.set_down(False)
        outcomes = load.stop()
        assert_failed_fast(outcomes, VAULT_FAIL_FAST_SECONDS)
        assert not [o for o in failures(outcomes) if o.op == "purchase"], "purchases need no key: they must go on"
        finish(service, known, outcomes)
    finally:
        transit.set_latency(0)
        transit.set_down(False)
        provider.close()
