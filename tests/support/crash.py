"""Crash-safety harness: load a real ``piivault serve`` with writes, crash it at random moments, retry, check.

A round: client threads send creates, updates and purchases, each with a stable identity (CreateCustomer's
``request_id``, the update's ``expected_version``, the purchase's ``(source, order_id)``); after a random delay the
server gets SIGKILL — or, on PostgreSQL every other round, the database is stopped with ``pg_ctl stop -m immediate``
and started again under the running server. Every write that was not acknowledged is then retried with the same body
until it gets an answer, and the database is inspected directly (``tests.support.crash_checks``): every acknowledged
write is there once, no customer is partial (row, wrapped DEK, blind indexes and audit events all or nothing), and the
audit chain verifies. Problems are collected, not raised, so a soak run can report its figures.

Each client thread is the only writer of the customers it created, so the harness's model of a customer (its
profile, version and orders) is exact; that is what makes a retried update decidable (see ``_Workload.retry``).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from piivault.v1 import customers_pb2 as cpb
from piivault.v1 import customers_pb2_grpc as cpb_grpc
from piivault.v1 import purchases_pb2 as ppb
from piivault.v1 import purchases_pb2_grpc as ppb_grpc
from tests.support.crash_checks import SOURCE, Checker, TrackedCustomer, TrackedOrder
from tests.support.crash_server import FAST_RECONNECT, CrashableServer
from tests.support.people import People, customer_message, profile_of
from tests.support.pg_cluster import PrivateCluster
from tests.support.server import ServerProcess
from vault.config import Settings
from vault.customers.models import Profile
from vault.customers.validation import canonical_profile

# A call that ends with one of these may or may not have been carried out: the client must retry it.
OUTCOME_UNKNOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
CALL_TIMEOUT = 20.0
RECOVERY_SECONDS = 60.0  # a retried write must get an answer within this long after the restart
PROBLEM_KINDS = ("lost", "partial", "duplicate", "audit", "refused", "unrecovered")


@dataclass(frozen=True)
class Problem:
    kind: str  # lost | partial | duplicate | audit | refused | unrecovered
    round: int
    detail: str  # ids and field names only, never a value


@dataclass
class CrashReport:
    backend: str
    rounds: int = 0
    server_kills: int = 0
    database_crashes: int = 0
    acknowledged: Counter[str] = field(default_factory=Counter)  # by kind, including writes acknowledged on retry
    retried: int = 0  # writes unacknowledged at a crash, each retried with the same id and body
    landed_before_crash: int = 0  # retries that found their first attempt had been carried out
    server_errors: int = 0  # INTERNAL/UNKNOWN answers (outcome unknown, retried like UNAVAILABLE)
    problems: list[Problem] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)  # crash to the last retry answered
    check_seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for problem in self.problems if problem.kind == kind)

    def summary(self) -> str:
        seconds = self.round_seconds or [0.0]
        recovery = sorted(self.recovery_seconds or [0.0])
        return "\n".join(
            [
                f"crash rounds ({self.backend}): {self.rounds} ({self.server_kills} server SIGKILLs, "
                f"{self.database_crashes} database crashes)",
                f"  acknowledged writes: {sum(self.acknowledged.values())} (creates {self.acknowledged['create']}, "
                f"updates {self.acknowledged['update']}, purchases {self.acknowledged['purchase']})",
                f"  unacknowledged at a crash, retried: {self.retried} ({self.landed_before_crash} had landed before "
                f"the crash, {self.retried - self.landed_before_crash} were carried out by the retry); "
                f"INTERNAL/UNKNOWN answers: {self.server_errors}",
                "  " + ", ".join(f"{kind} {self.count(kind)}" for kind in PROBLEM_KINDS),
                f"  per round: mean {sum(seconds) / len(seconds):.2f} s, max {max(seconds):.2f} s; crash to recovered: "
                f"median {recovery[len(recovery) // 2]:.2f} s, max {recovery[-1]:.2f} s; "
                f"checks {self.check_seconds:.1f} s in all",
            ]
        )


# -- the workload and its bookkeeping ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Write:
    kind: str  # create | update | purchase
    customer: TrackedCustomer
    request: Any
    after: Profile | None = None  # an update's profile once it lands
    order: TrackedOrder | None = None


@dataclass
class _Stubs:
    customers: cpb_grpc.CustomerServiceStub
    purchases: ppb_grpc.PurchaseServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> _Stubs:
        return cls(cpb_grpc.CustomerServiceStub(channel), ppb_grpc.PurchaseServiceStub(channel))


class _Workload:
    def __init__(self, report: CrashReport, clients: int, metadata: tuple[tuple[str, str], ...], seed: int) -> None:
        self._report = report
        self._metadata = metadata
        self._people = People(seed=seed)
        self._lock = threading.Lock()
        self._orders = 0
        self._purchase_time = timestamp_pb2.Timestamp()
        self._purchase_time.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        self.round = 0
        self.customers: list[TrackedCustomer] = []  # every acknowledged create
        self.owned: list[list[TrackedCustomer]] = [[] for _ in range(clients)]
        self.unacknowledged: list[_Write] = []
        self.touched: set[TrackedCustomer] = set()  # written (or tried) this round

    def problem(self, kind: str, detail: str) -> None:
        with self._lock:
            self._report.problems.append(Problem(kind, self.round, detail))

    def client(self, index: int, channel: grpc.Channel, stop: threading.Event, seed: int) -> None:
        """Send writes one after another until ``stop``, or until one ends without an answer (the crash)."""
        rng = random.Random(seed)
        stubs = _Stubs.on(channel)
        while not stop.is_set():
            write = self._next_write(index, rng)
            try:
                self._send(write, stubs, retry=False)
            except grpc.RpcError as error:
                code = error.code()
                with self._lock:
                    self.touched.add(write.customer)
                    if code in OUTCOME_UNKNOWN:
                        self.unacknowledged.append(write)
                        self._report.server_errors += code in SERVER_ERRORS
                if code not in OUTCOME_UNKNOWN:
                    self.problem("refused", f"{write.kind} of {write.customer.customer_id or 'a new customer'}: {code}")
                return

    def _next_write(self, index: int, rng: random.Random) -> _Write:
        mine = self.owned[index]
        roll = rng.random()
        if not mine or roll < 0.4:
            with self._lock:
                person = self._people.next()
            serial = int(person.member_id[1:])
            create = cpb.CreateCustomerRequest(customer=customer_message(person), request_id=f"crash-{serial}")
            return _Write("create", TrackedCustomer(serial, create, canonical_profile(profile_of(person))), create)
        customer = rng.choice(mine)
        if roll < 0.75:
            # Each update writes values no other update writes (the serial and the new version are in them).
            version = customer.version + 1
            email, address = (
                f"user{customer.serial}.v{version}@example.test",
                f"静安区南京西路{customer.serial}弄{version}号",
            )
            patch = canonical_profile(Profile(email=email, address=address), only=frozenset({"email", "address"}))
            update = cpb.UpdateCustomerRequest(
                customer=cpb.Customer(customer_id=customer.customer_id, email=email, address=address),
                update_mask=field_mask_pb2.FieldMask(paths=["email", "address"]),
                expected_version=customer.version,
            )
            return _Write("update", customer, update, after=customer.profile.with_fields(patch, ("email", "address")))
        with self._lock:
            self._orders += 1
            order_id = f"crash-order-{self._orders}"
        quantity, price = rng.randrange(1, 4), rng.randrange(100, 100_000)
        purchase = ppb.Purchase(
            source=SOURCE,
            order_id=order_id,
            store_id="S001",
            purchase_time=self._purchase_time,
            lines=[ppb.PurchaseLine(sku="SKU-1", quantity=quantity, unit_price_minor=price)],
            amount_minor=quantity * price,
            currency="CNY",
            payment_method="wechat_pay",
        )
        request = ppb.RecordPurchaseRequest(customer_id=customer.customer_id, purchase=purchase)
        return _Write("purchase", customer, request, order=TrackedOrder(request))

    def _send(self, write: _Write, stubs: _Stubs, *, retry: bool, crash_time: dt.datetime | None = None) -> None:
        customer = write.customer
        landed = False
        if write.kind == "create":
            created = stubs.customers.CreateCustomer(write.request, metadata=self._metadata, timeout=CALL_TIMEOUT)
            customer.customer_id, customer.version = created.customer.customer_id, created.customer.version
            # A retry answered from the idempotency record carries the first attempt's create time, and is audited
            # once more: the customer then has two create events, the first attempt's and the replay's.
            landed = retry and crash_time is not None and created.customer.create_time.ToDatetime(dt.UTC) < crash_time
            customer.create_events = 1 + landed
            if created.customer.version != 1:
                self.problem("refused", f"create of {customer.customer_id} answered with another version than 1")
        elif write.kind == "update":
            updated = stubs.customers.UpdateCustomer(write.request, metadata=self._metadata, timeout=CALL_TIMEOUT)
            if updated.customer.version != write.request.expected_version + 1:
                self.problem("refused", f"update of {customer.customer_id} answered with another version")
            assert write.after is not None
            customer.profile, customer.version = write.after, write.request.expected_version + 1
        else:
            recorded = stubs.purchases.RecordPurchase(write.request, metadata=self._metadata, timeout=CALL_TIMEOUT)
            if recorded.duplicate and not retry:
                self.problem("duplicate", f"new order {write.request.purchase.order_id} answered as a duplicate")
            assert write.order is not None
            write.order.purchase_id, landed = recorded.purchase_id, recorded.duplicate
        self._acknowledged(write, landed)

    def _acknowledged(self, write: _Write, landed: bool) -> None:
        with self._lock:
            self._report.acknowledged[write.kind] += 1
            self._report.landed_before_crash += landed
            self.touched.add(write.customer)
            if write.kind == "create":
                self.customers.append(write.customer)
                self.owned[self._owner(write)].append(write.customer)
            elif write.kind == "purchase":
                assert write.order is not None
                write.customer.orders.append(write.order)

    def _owner(self, write: _Write) -> int:
        """The one client thread that will ever write this customer again (not necessarily the one that created it:
        an unacknowledged create is acknowledged by the retry, outside every thread)."""
        return write.customer.serial % len(self.owned)

    def retry(self, channel: grpc.Channel, crash_time: dt.datetime) -> bool:
        """Retry every unacknowledged write with its id and body until it is answered; False if the server did not
        recover (a problem is recorded).

        A retried update carries the ``expected_version`` of its first attempt. If that attempt was carried out, the
        retry gets ABORTED: the version moved on. Since only this harness's one client thread writes that customer,
        the version can only have moved by that very update, so ABORTED is decided by reading the customer back —
        version ``expected + 1`` with the update's email and address means the first attempt landed (acknowledged
        now); anything else means it was lost, or half applied. The final database check confirms it field by field.
        """
        stubs = _Stubs.on(channel)
        deadline = time.monotonic() + RECOVERY_SECONDS
        pending, self.unacknowledged = self.unacknowledged, []
        self._report.retried += len(pending)
        for write in pending:
            while True:
                try:
                    self._send(write, stubs, retry=True, crash_time=crash_time)
                    break
                except grpc.RpcError as error:
                    code = error.code()
                    if write.kind == "update" and code == grpc.StatusCode.ABORTED:
                        self._recognise_update(write, stubs)
                        break
                    if code in OUTCOME_UNKNOWN and time.monotonic() < deadline:
                        self._report.server_errors += code in SERVER_ERRORS
                        time.sleep(0.05)
                        continue
                    kind = "unrecovered" if code in OUTCOME_UNKNOWN else "refused"
                    self.problem(
                        kind, f"retried {write.kind} of {write.customer.customer_id or 'a new customer'}: {code}"
                    )
                    return False
        return True

    def _recognise_update(self, write: _Write, stubs: _Stubs) -> None:
        customer, after = write.customer, write.after
        assert after is not None
        read = stubs.customers.GetCustomer(
            cpb.GetCustomerRequest(customer_id=customer.customer_id, purpose="customer_service"),
            metadata=self._metadata,
            timeout=CALL_TIMEOUT,
        ).customer
        if read.version == customer.version + 1 and (read.email, read.address) == (after.email, after.address):
            customer.profile, customer.version = after, customer.version + 1
            self._acknowledged(write, landed=True)
        else:
            self.problem("lost", f"update of {customer.customer_id} to version {customer.version + 1} is not there")


# -- rounds ----------------------------------------------------------------------------------------------------------


class CrashHarness:
    """A fresh vault under ``base`` (SQLite, or PostgreSQL on ``cluster``), served and loaded, crashed round by round.

    ``with CrashHarness(tmp_path) as harness: report = harness.run(30)``. On PostgreSQL odd rounds SIGKILL
    the server and even ones crash the database under the running server. After each round the customers it touched
    are checked; every ``full_check_every`` rounds and after the last, all of them; the audit chain every
    ``verify_every`` rounds and after the last.
    """

    def __init__(
        self,
        base: Path,
        *,
        cluster: PrivateCluster | None = None,
        seed: int = 1,
        clients: int = 4,
        max_load_seconds: float = 0.5,
    ) -> None:
        self.report = CrashReport("postgresql" if cluster else "sqlite")
        self.server = ServerProcess(base, {"PIIVAULT_DATABASE_URL": cluster.url} if cluster else {})
        self.settings = Settings(data_dir=base / "var", database_url=cluster.url if cluster else "")
        self._cluster = cluster
        self._seed = seed
        self._clients = clients
        self._max_load_seconds = max_load_seconds
        self._rng = random.Random(seed)
        self._crashable = CrashableServer(self.server)
        self._workload: _Workload | None = None
        self._checker: Checker | None = None

    def __enter__(self) -> CrashHarness:
        try:
            self._crashable.start()
        except BaseException:
            self._crashable.close()
            raise
        self._workload = _Workload(self.report, self._clients, self.server.metadata, self._seed)
        self._checker = Checker(self.settings, self._workload.problem)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._crashable.close()

    @property
    def customers(self) -> list[TrackedCustomer]:
        """Every acknowledged customer, as the vault must hold it."""
        assert self._workload is not None
        return self._workload.customers

    def run(
        self,
        rounds: int,
        *,
        full_check_every: int = 10,
        verify_every: int = 1,
        progress: Callable[[CrashReport], None] | None = None,
    ) -> CrashReport:
        for number in range(1, rounds + 1):
            started = time.monotonic()
            recovered = self._round(self.report.rounds + 1)
            checking = time.monotonic()
            full = not recovered or number % full_check_every == 0 or number == rounds
            verify = not recovered or number % verify_every == 0 or number == rounds
            self.check(everything=full, verify_chain=verify)
            self.report.check_seconds += time.monotonic() - checking
            self.report.rounds += 1
            self.report.round_seconds.append(time.monotonic() - started)
            if progress is not None:
                progress(self.report)
            if not recovered:
                break
        return self.report

    def check(self, *, everything: bool = True, verify_chain: bool = True) -> list[Problem]:
        """Check the customers written since the last check (or all), and the chain; returns the new problems."""
        assert self._workload is not None and self._checker is not None
        before = len(self.report.problems)
        customers = self._workload.customers if everything else list(self._workload.touched)
        self._checker.check(self._workload.customers, customers, verify_chain)
        self._workload.touched = set()
        return self.report.problems[before:]

    def _round(self, number: int) -> bool:
        """Load, crash, recover, retry; False when the server did not recover (a problem is recorded)."""
        workload, cluster = self._workload, self._cluster
        assert workload is not None
        workload.round = number
        database_crash = cluster is not None and number % 2 == 0
        stop = threading.Event()
        address = self.server.address
        with grpc.insecure_channel(address, options=FAST_RECONNECT) as channel:
            threads = [
                threading.Thread(
                    target=workload.client, args=(i, channel, stop, self._rng.randrange(2**32)), daemon=True
                )
                for i in range(self._clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(self._rng.uniform(0.02, self._max_load_seconds))
            crashed = time.monotonic()
            if cluster is not None and database_crash:
                cluster.stop_immediate()
                self.report.database_crashes += 1
            else:
                self._crashable.kill()
                self.report.server_kills += 1
            # Taken once nothing can commit any more: a customer created before it was written by the first attempt
            # (retries run after the restart), which tells a retry answered from the idempotency record.
            crash_time = dt.datetime.now(dt.UTC)
            stop.set()
            for thread in threads:
                thread.join(CALL_TIMEOUT * 2)
        if any(thread.is_alive() for thread in threads):
            workload.problem("unrecovered", "a client call did not return after the crash")
            return False
        if cluster is not None and database_crash:
            cluster.start()  # the running server must find its way back to the database by itself
        else:
            self._crashable.restart()
        with grpc.insecure_channel(address, options=FAST_RECONNECT) as channel:
            recovered = workload.retry(channel, crash_time)
        self.report.recovery_seconds.append(time.monotonic() - crashed)
        return recovered
