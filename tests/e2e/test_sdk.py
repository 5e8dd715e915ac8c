"""The SDK's own promises (issue 9, acceptance 2): safe retries, deadlines, request ids, a method for every RPC.

Network faults are simulated by ``tests.support.flaky_proxy``, a real gRPC proxy between the client and the server:
it can drop a reply after the server has done the work — the case that makes retrying a write dangerous — refuse a
call before the server sees it, cut a stream after its first message, or hold a call past its deadline.
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from audit.queries import AuditQueries, EventFilter
from piivault.client import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    NotFound,
    PiiVault,
    RetryPolicy,
    Unavailable,
    is_loopback,
)
from piivault.v1 import (
    analytics_pb2,
    audit_pb2,
    consent_pb2,
    dsar_pb2,
    keys_pb2,
    purchases_pb2,
)
from piivault.v1 import customers_pb2 as pb
from tests.e2e.conftest import Connect
from tests.support.flaky_proxy import Fault, FlakyProxy
from tests.support.people import People, customer_message
from vault.app import Vault
from vault.auth.tokens import IssuedToken

# Retrying is the client's business; where the KEK lives does not matter (both databases still run).
pytestmark = pytest.mark.local_keyring

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
CREATE = "CustomerService/CreateCustomer"
PURPOSE = "customer_service"


@pytest.fixture
def flaky(connect: Connect, proxy: FlakyProxy, service_token: IssuedToken) -> PiiVault:
    """A service client whose calls go through the proxy, retrying with short backoffs."""
    return connect(service_token.secret, address=proxy.address, retry=FAST)


def _purchase(order_id: str) -> purchases_pb2.Purchase:
    when = Timestamp()
    when.FromSeconds(1_767_225_600)
    return purchases_pb2.Purchase(source="pos", order_id=order_id, purchase_time=when, amount_minor=990, currency="CNY")


def test_a_create_retried_after_its_reply_was_lost_creates_one_customer(
    vault: Vault, client: PiiVault, flaky: PiiVault, proxy: FlakyProxy, people: People
) -> None:
    proxy.fail(CREATE, Fault.DROP_REPLY)
    created = flaky.customers.create(customer_message(people.next()))
    first, second = proxy.attempts(CREATE)
    assert first.fault is Fault.DROP_REPLY and second.fault is None
    assert first.request_id == second.request_id != ""  # the same idempotency key, sent again
    listed = client.customers.list(purpose=PURPOSE, page_size=500).customers
    assert [c.customer_id for c in listed] == [created.customer.customer_id]
    events = [
        e for chunk in AuditQueries(vault.database).events(EventFilter(action="/piivault.v1." + CREATE)) for e in chunk
    ]
    assert {e.request_id for e in events} == {first.request_id} and {e.outcome for e in events} == {"ok"}


def test_the_lost_reply_is_real_the_server_did_the_work(
    client: PiiVault, connect: Connect, proxy: FlakyProxy, service_token: IssuedToken, people: People
) -> None:
    """The control for the test above: without retries the client sees UNAVAILABLE although the customer exists, and
    a naive resend under a new request id is refused as a duplicate of the customer the lost attempt created."""
    once = connect(service_token.secret, address=proxy.address)  # retries disabled
    customer = customer_message(people.next())
    proxy.fail(CREATE, Fault.DROP_REPLY)
    with pytest.raises(Unavailable) as lost:
        once.customers.create(customer)
    assert lost.value.attempts == 1 and len(proxy.attempts(CREATE)) == 1
    with pytest.raises(AlreadyExists) as duplicate:
        client.customers.create(customer)  # a new request id
    (stored,) = client.customers.list(purpose=PURPOSE).customers
    assert duplicate.value.existing_customer_id == stored.customer_id


def test_a_write_that_is_not_idempotent_is_not_retried(flaky: PiiVault, proxy: FlakyProxy, people: People) -> None:
    created = flaky.customers.create(customer_message(people.next())).customer
    proxy.fail("CustomerService/UpdateCustomer", Fault.DROP_REPLY)
    change = pb.Customer(customer_id=created.customer_id, address="上海市徐汇区")
    with pytest.raises(Unavailable) as caught:
        flaky.customers.update(change, fields=["address"], expected_version=1)
    assert caught.value.attempts == 1 and len(proxy.attempts("CustomerService/UpdateCustomer")) == 1
    # The server did apply it: a blind resend would now fail as stale, so the SDK leaves it to the caller.
    with pytest.raises(Aborted):
        flaky.customers.update(change, fields=["address"], expected_version=1)


def test_retries_stop_after_max_attempts_with_the_same_request_id(flaky: PiiVault, proxy: FlakyProxy) -> None:
    proxy.fail("CustomerService/GetCustomer", *[Fault.REFUSE] * 10)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        flaky.customers.get("00000000-0000-4000-8000-000000000000", purpose=PURPOSE, request_id="get-1")
    assert caught.value.attempts == FAST.max_attempts == 4
    assert caught.value.request_id == "get-1" and caught.value.message == "proxy: upstream connect error"
    assert [seen.request_id for seen in proxy.attempts("CustomerService/GetCustomer")] == ["get-1"] * 4
    assert time.monotonic() - started < 2  # three backoffs of at most 0.01, 0.02 and 0.04 s


def test_errors_other_than_unavailable_are_not_retried(flaky: PiiVault, proxy: FlakyProxy) -> None:
    with pytest.raises(NotFound) as caught:
        flaky.customers.get("00000000-0000-4000-8000-000000000000", purpose=PURPOSE)
    assert caught.value.attempts == 1 and len(proxy.attempts("CustomerService/GetCustomer")) == 1


def test_a_server_stream_is_retried_only_before_its_first_response(
    vault: Vault, connect: Connect, proxy: FlakyProxy
) -> None:
    auditor = connect(vault.tokens.create("audit-1", "auditor").secret, address=proxy.address, retry=FAST)
    proxy.fail("AuditService/QueryEvents", Fault.REFUSE)
    assert [chunk.events for chunk in auditor.audit.query_events()]  # retried; the refusal itself is not audited
    assert [seen.fault for seen in proxy.attempts("AuditService/QueryEvents")] == [Fault.REFUSE, None]
    proxy.fail("AuditService/QueryEvents", Fault.DROP_AFTER_FIRST)
    stream = auditor.audit.query_events()
    assert next(stream).events  # the first chunk arrives ...
    with pytest.raises(Unavailable) as caught:
        list(stream)  # ... then the stream breaks, and is not sent again
    assert caught.value.attempts == 1 and len(proxy.attempts("AuditService/QueryEvents")) == 3


def test_a_client_stream_is_retried_only_when_it_can_be_sent_again(
    flaky: PiiVault, proxy: FlakyProxy, people: People
) -> None:
    customer_id = flaky.customers.create(customer_message(people.next())).customer.customer_id
    orders = [(customer_id, _purchase(f"S-{n}")) for n in range(3)]
    proxy.fail("PurchaseService/RecordPurchases", Fault.DROP_REPLY)
    retried = flaky.purchases.record_many(orders)  # a list: sent again, and the orders are duplicates then
    assert (retried.recorded, retried.duplicates, retried.rejected) == (0, 3, 0)
    assert len(proxy.attempts("PurchaseService/RecordPurchases")) == 2
    proxy.fail("PurchaseService/RecordPurchases", Fault.DROP_REPLY)
    with pytest.raises(Unavailable) as caught:
        flaky.purchases.record_many(iter([(customer_id, _purchase("S-9"))]))  # an iterator: sent once
    assert caught.value.attempts == 1 and len(proxy.attempts("PurchaseService/RecordPurchases")) == 3


def test_every_call_carries_a_deadline(
    vault: Vault, connect: Connect, proxy: FlakyProxy, service_token: IssuedToken, people: People
) -> None:
    pos = connect(service_token.secret, address=proxy.address)
    pos.customers.create(customer_message(people.next()))
    pos.customers.list(purpose=PURPOSE, timeout=5)
    auditor = connect(vault.tokens.create("audit-2", "auditor").secret, address=proxy.address)
    list(auditor.audit.query_events())
    seen = {s.method.rsplit("/", 1)[1]: s.time_remaining for s in proxy.seen}
    assert seen.keys() == {"CreateCustomer", "ListCustomers", "QueryEvents"}
    assert all(remaining is not None for remaining in seen.values())
    # gRPC's wire format rounds a deadline up (to whole seconds for 600 s): allow a second.
    assert 25 < (seen["CreateCustomer"] or 0) <= 31  # the default of 30 s
    assert 0 < (seen["ListCustomers"] or 0) <= 6  # the call's own
    assert 550 < (seen["QueryEvents"] or 0) <= 601  # streams: 600 s
    proxy.fail(CREATE, Fault.DELAY)  # held for 3 s
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        connect(service_token.secret, address=proxy.address, retry=FAST).customers.create(
            customer_message(people.next()), timeout=0.5
        )
    assert time.monotonic() - started < 2 and caught.value.attempts == 1


def test_the_request_id_reaches_the_audit_log(vault: Vault, client: PiiVault, people: People) -> None:
    created = client.customers.create(customer_message(people.next()), request_id="pos-42-till-7-0001")
    client.customers.get(created.customer.customer_id, purpose=PURPOSE, request_id="lookup-7")
    client.customers.get(created.customer.customer_id, purpose=PURPOSE)  # generated: a fresh uuid4
    events = [e for chunk in AuditQueries(vault.database).events(EventFilter()) for e in chunk]
    ids = [e.request_id for e in events if e.customer_ids == (created.customer.customer_id,)]
    assert ids[:2] == ["pos-42-till-7-0001", "lookup-7"]
    assert len(ids) == 3 and len(ids[2]) == 32 and ids[2] not in ids[:2]


# Every RPC of the API and the SDK method that makes it.
SDK_METHODS = {
    "CustomerService/CreateCustomer": "customers.create",
    "CustomerService/GetCustomer": "customers.get",
    "CustomerService/UpdateCustomer": "customers.update",
    "CustomerService/FindCustomers": "customers.find",
    "CustomerService/ListCustomers": "customers.list",
    "CustomerService/ImportCustomers": "imports.customers",
    "CustomerService/MergeCustomers": "customers.merge",
    "CustomerService/SplitCustomer": "customers.split",
    "ConsentService/GrantConsent": "consent.grant",
    "ConsentService/WithdrawConsent": "consent.withdraw",
    "ConsentService/ListConsents": "consent.list",
    "ConsentService/GetConsentHistory": "consent.history",
    "PurchaseService/RecordPurchase": "purchases.record",
    "PurchaseService/RecordPurchases": "purchases.record_many",
    "DsarService/OpenRequest": "dsar.open",
    "DsarService/VerifyRequest": "dsar.verify",
    "DsarService/RejectRequest": "dsar.reject",
    "DsarService/GetRequest": "dsar.get",
    "DsarService/ListRequests": "dsar.list",
    "DsarService/ExportData": "dsar.export_data",
    "DsarService/EraseCustomer": "dsar.erase",
    "DsarService/RectifyCustomer": "dsar.rectify",
    "DsarService/RestrictProcessing": "dsar.restrict",
    "DsarService/LiftRestriction": "dsar.lift_restriction",
    "DsarService/SetLegalHold": "dsar.set_legal_hold",
    "AnalyticsService/ExportPurchases": "analytics.export_purchases",
    "KeyService/GetKeyStatus": "keys.status",
    "KeyService/RotateKek": "keys.rotate_kek",
    "KeyService/RewrapKeys": "keys.rewrap_keys",
    "KeyService/SetMinDecryptionVersion": "keys.set_min_decryption_version",
    "AuditService/QueryEvents": "audit.query_events",
    "AuditService/VerifyChain": "audit.verify_chain",
    "AuditService/GetCheckpoint": "audit.get_checkpoint",
}


def test_the_sdk_has_a_method_for_every_rpc(client: PiiVault) -> None:
    modules = (pb, consent_pb2, purchases_pb2, dsar_pb2, analytics_pb2, keys_pb2, audit_pb2)
    rpcs = {
        f"{service.name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert rpcs == set(SDK_METHODS)
    for path in SDK_METHODS.values():
        api, method = path.split(".")
        assert callable(getattr(getattr(client, api), method)), path


def test_plaintext_tokens_and_secrets(service_token: IssuedToken) -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1:50051", "[::1]:1", "localhost:50051", "unix:/run/pv.sock"))
    assert not any(is_loopback(a) for a in ("10.1.2.3:50051", "vault.internal:443", "[2001:db8::1]:443"))
    with pytest.raises(ValueError, match="plaintext"):
        PiiVault("vault.internal:50051", service_token.secret)
    for bad in ("", "pvt_abc def", "pvt_\n", "令牌"):
        with pytest.raises(ValueError, match="token") as caught:
            PiiVault("127.0.0.1:1", bad)
        assert bad not in str(caught.value) or not bad
    with PiiVault("127.0.0.1:1", service_token.secret) as unused:
        assert service_token.secret not in repr(unused) and "[secure]" in repr(unused)
    with pytest.raises(ValueError, match="INTERNAL"):
        RetryPolicy(codes=frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}))
    waits = [FAST.backoff(n) for n in range(1, 6) for _ in range(50)]
    assert all(0 <= w <= 0.05 for w in waits) and len(set(waits)) > 1


def test_the_sdk_imports_nothing_of_the_server() -> None:
    """Statically, for every module (the standalone test proves it at run time for the paths it takes)."""
    root = Path(__file__).resolve().parents[2] / "clients" / "piivault"
    allowed = ("grpc", "google.protobuf", "google.rpc", "piivault.client", "piivault.v1", "__future__")
    found: dict[str, set[str]] = {}
    for path in [*(root / "client").glob("*.py"), *(root / "v1").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or any(name == a or name.startswith(a + ".") for a in allowed):
                    continue
                found.setdefault(path.name, set()).add(name)
    assert found == {}
