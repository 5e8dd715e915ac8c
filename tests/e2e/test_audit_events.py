"""Every RPC leaves the right audit event — succeeded, denied or invalid — and no personal data in it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from audit.events import AuditEvent
from audit.queries import AuditQueries, EventFilter
from piivault.client import InvalidArgument, PiiVault, PiiVaultError, Unavailable
from piivault.v1 import consent_pb2, dsar_pb2, purchases_pb2
from piivault.v1 import customers_pb2 as pb
from tests.support.people import People, Person, customer_message, dpo
from tests.support.scan import find_in_bytes, needles
from vault.app import Vault
from vault.dsar.models import DsarType

CUSTOMER = "/piivault.v1.CustomerService/"
KEYS = "/piivault.v1.KeyService/"
AUDIT = "/piivault.v1.AuditService/"
CONSENT = "/piivault.v1.ConsentService/"
DSAR = "/piivault.v1.DsarService/"
PURCHASES = "/piivault.v1.PurchaseService/"
ANALYTICS = "/piivault.v1.AnalyticsService/"


def _purchase(order_id: str, currency: str = "CNY") -> purchases_pb2.Purchase:
    when = Timestamp()
    when.FromSeconds(1_767_225_600)
    return purchases_pb2.Purchase(
        source="pos", order_id=order_id, purchase_time=when, amount_minor=990, currency=currency
    )


PURPOSE = "customer_service"
NOTICE_SHA256 = hashlib.sha256("短信营销告知 v3".encode()).hexdigest()


@dataclass
class World:
    vault: Vault
    client: PiiVault
    person: Person
    customer_id: str
    tokens: dict[str, str]

    def as_role(self, role: str) -> PiiVault:
        return self.client.with_token(self.tokens[role])


# What an RPC records does not depend on where the KEK lives: the local keyring is enough (both databases still run).
pytestmark = pytest.mark.local_keyring


@pytest.fixture
def world(vault: Vault, client: PiiVault, people: People) -> World:
    tokens = {
        role: vault.tokens.create(f"{role}-1", role).secret
        for role in ("service", "admin", "auditor", "dpo", "analyst")
    }
    person = people.next()
    created = client.with_token(tokens["service"]).customers.create(customer_message(person))
    return World(vault, client, person, created.customer.customer_id, tokens)


# (world, the acting client, the call's request id, whether to send a valid request)
Call = Callable[[World, PiiVault, str, bool], object]


def _duplicate(world: World) -> str:
    """A second record of the world's customer: another phone, and an address the first record lacks."""
    from vault.customers.models import Profile

    created = world.vault.customers.create(dpo(), "", Profile(mobile="13700009999", address="上海市静安区某路1号"))
    from sqlalchemy import update

    from vault.storage.models import CustomerRow

    with world.vault.database.write() as connection:  # make the address the one field the survivor lacks
        connection.execute(
            update(CustomerRow).where(CustomerRow.customer_id == world.customer_id).values(address_ct=None)
        )
    return created.customer_id


def _request(world: World, type_: DsarType, verified: bool = True) -> str:
    """A data-subject request for the world's customer, opened (and verified) in-process."""
    opened = world.vault.dsar.open(dpo(), None, world.customer_id, type_)
    if verified:
        world.vault.dsar.verify(dpo(), opened.request_id)
    return opened.request_id


def _id(world: World, type_: DsarType, ok: bool, verified: bool = True) -> str:
    return _request(world, type_, verified) if ok else "not-a-request"


# Each RPC: (name, the role allowed to call it, how to call it validly or invalidly, what a success records).
RPCS: list[tuple[str, str, Call, tuple[str, ...]]] = [
    (
        CUSTOMER + "CreateCustomer",
        "service",
        lambda w, c, rid, ok: c.customers.create(
            pb.Customer(name="新客", mobile="13700001111" if ok else "12"), request_id=rid
        ),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "GetCustomer",
        "service",
        lambda w, c, rid, ok: c.customers.get(w.customer_id if ok else "not-an-id", purpose=PURPOSE, request_id=rid),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "UpdateCustomer",
        "service",
        lambda w, c, rid, ok: c.customers.update(
            pb.Customer(customer_id=w.customer_id, address="新地址"),
            fields=["address" if ok else "no_such_field"],
            expected_version=1,
            request_id=rid,
        ),
        (),  # the last event is the duplicate's erasure; the merge event before it names the fields gained
    ),
    (
        CUSTOMER + "FindCustomers",
        "service",
        lambda w, c, rid, ok: c.customers.find(
            mobile=w.person.mobile if ok else "abc", purpose=PURPOSE, request_id=rid
        ),
        ("mobile", "email"),
    ),
    (
        CUSTOMER + "ListCustomers",
        "service",
        lambda w, c, rid, ok: c.customers.list(page_size=10 if ok else -1, purpose=PURPOSE, request_id=rid),
        ("mobile",),
    ),
    (
        CONSENT + "GrantConsent",
        "service",
        lambda w, c, rid, ok: c.consent.grant(
            w.customer_id,
            purpose="marketing_sms",
            scope=consent_pb2.CONSENT_SCOPE_STANDARD,
            notice_version="v3",
            notice_sha256=NOTICE_SHA256 if ok else "not-a-digest",
            channel=consent_pb2.CONSENT_CHANNEL_POS,
            request_id=rid,
        ),
        (),
    ),
    (
        CONSENT + "WithdrawConsent",
        "service",
        lambda w, c, rid, ok: c.consent.withdraw(
            w.customer_id,
            purpose="marketing_sms" if ok else "order_fulfilment",
            channel=consent_pb2.CONSENT_CHANNEL_CALL_CENTRE,
            request_id=rid,
        ),
        (),
    ),
    (
        CONSENT + "ListConsents",
        "service",
        lambda w, c, rid, ok: c.consent.list(w.customer_id if ok else "x", request_id=rid),
        (),
    ),
    (
        CONSENT + "GetConsentHistory",
        "service",
        lambda w, c, rid, ok: c.consent.history(w.customer_id, page_size=10 if ok else -1, request_id=rid),
        (),
    ),
    (
        DSAR + "OpenRequest",
        "dpo",
        lambda w, c, rid, ok: c.dsar.open(
            dsar_pb2.DSAR_TYPE_ACCESS if ok else dsar_pb2.DSAR_TYPE_UNSPECIFIED,
            customer_id=w.customer_id,
            request_id=rid,
        ),
        (),
    ),
    (
        DSAR + "VerifyRequest",
        "dpo",
        lambda w, c, rid, ok: c.dsar.verify(_id(w, DsarType.ACCESS, ok, verified=False), request_id=rid),
        (),
    ),
    (
        DSAR + "RejectRequest",
        "dpo",
        lambda w, c, rid, ok: c.dsar.reject(
            _request(w, DsarType.ACCESS, verified=False),
            reason=dsar_pb2.REJECTION_REASON_DUPLICATE if ok else dsar_pb2.REJECTION_REASON_UNSPECIFIED,
            text="已于上月答复同一请求",
            request_id=rid,
        ),
        (),
    ),
    (
        DSAR + "GetRequest",
        "dpo",
        lambda w, c, rid, ok: c.dsar.get(_id(w, DsarType.ACCESS, ok), request_id=rid),
        (),
    ),
    (
        DSAR + "ListRequests",
        "dpo",
        lambda w, c, rid, ok: c.dsar.list(page_size=10 if ok else -1, request_id=rid),
        (),
    ),
    (
        DSAR + "ExportData",
        "dpo",
        lambda w, c, rid, ok: c.dsar.export_data(_id(w, DsarType.ACCESS, ok), request_id=rid),
        ("mobile", "name", "national_id"),
    ),
    (
        DSAR + "EraseCustomer",
        "dpo",
        lambda w, c, rid, ok: c.dsar.erase(_id(w, DsarType.ERASURE, ok), request_id=rid),
        (),
    ),
    (
        DSAR + "RectifyCustomer",
        "dpo",
        lambda w, c, rid, ok: c.dsar.rectify(
            _request(w, DsarType.RECTIFICATION),
            pb.Customer(name="更正后的名字"),
            fields=["name" if ok else "no_such_field"],
            request_id=rid,
        ),
        ("name",),
    ),
    (
        DSAR + "RestrictProcessing",
        "dpo",
        lambda w, c, rid, ok: c.dsar.restrict(_id(w, DsarType.RESTRICTION, ok), request_id=rid),
        (),
    ),
    (
        DSAR + "LiftRestriction",
        "dpo",
        lambda w, c, rid, ok: c.dsar.lift_restriction(w.customer_id if ok else "x", request_id=rid),
        (),
    ),
    (
        DSAR + "SetLegalHold",
        "dpo",
        lambda w, c, rid, ok: c.dsar.set_legal_hold(w.customer_id if ok else "x", hold=True, request_id=rid),
        (),
    ),
    (
        CUSTOMER + "ImportCustomers",
        "service",
        lambda w, c, rid, ok: c.imports.customers(
            [pb.ImportCustomersRequest(source="crm", row=2, customer=pb.Customer(name="导入", mobile="13700002222"))],
            request_id=rid,
        ),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "MergeCustomers",
        "service",
        lambda w, c, rid, ok: c.customers.merge(w.customer_id, _duplicate(w) if ok else w.customer_id, request_id=rid),
        (),  # the last event is the duplicate's erasure; the merge event before it names the fields gained
    ),
    (
        CUSTOMER + "SplitCustomer",
        "service",
        lambda w, c, rid, ok: c.customers.split(w.customer_id, ["email"] if ok else ["shoe_size"], request_id=rid),
        ("email",),
    ),
    (
        PURCHASES + "RecordPurchase",
        "service",
        lambda w, c, rid, ok: c.purchases.record(
            w.customer_id, _purchase(uuid.uuid4().hex, "CNY" if ok else "元"), request_id=rid
        ),
        (),
    ),
    (
        PURCHASES + "RecordPurchases",
        "service",
        lambda w, c, rid, ok: c.purchases.record_many(
            [(w.customer_id, _purchase(uuid.uuid4().hex)) for _ in range(3)], request_id=rid
        ),
        (),
    ),
    (
        ANALYTICS + "ExportPurchases",
        "analyst",
        lambda w, c, rid, ok: list(c.analytics.export_purchases(cursor="" if ok else "not-a-cursor", request_id=rid)),
        (),
    ),
    (
        KEYS + "GetKeyStatus",
        "admin",
        lambda w, c, rid, ok: c.keys.status(request_id=rid),
        (),
    ),
    (
        KEYS + "RotateKek",
        "admin",
        lambda w, c, rid, ok: list(c.keys.rotate_kek(request_id=rid)),
        (),
    ),
    (
        KEYS + "RewrapKeys",
        "admin",
        lambda w, c, rid, ok: list(c.keys.rewrap_keys(request_id=rid)),
        (),
    ),
    (
        KEYS + "SetMinDecryptionVersion",
        "admin",
        lambda w, c, rid, ok: c.keys.set_min_decryption_version(1 if ok else 99, request_id=rid),
        (),
    ),
    (
        AUDIT + "QueryEvents",
        "auditor",
        lambda w, c, rid, ok: list(c.audit.query_events(page_size=5 if ok else -5, request_id=rid)),
        (),
    ),
    (
        AUDIT + "VerifyChain",
        "auditor",
        lambda w, c, rid, ok: c.audit.verify_chain(request_id=rid),
        (),
    ),
    (
        AUDIT + "GetCheckpoint",
        "auditor",
        lambda w, c, rid, ok: c.audit.get_checkpoint(request_id=rid),
        (),
    ),
]
NO_INVALID_FORM = {
    CUSTOMER + "ImportCustomers",  # a bad row is reported in the response, not a failed call
    PURCHASES + "RecordPurchases",  # a bad row is reported in the response, not a failed call
    KEYS + "GetKeyStatus",
    KEYS + "RotateKek",
    KEYS + "RewrapKeys",
    AUDIT + "VerifyChain",
    AUDIT + "GetCheckpoint",
}


def _events(world: World, request_id: str) -> list[AuditEvent]:
    return [
        event
        for chunk in AuditQueries(world.vault.database).events(EventFilter(), 0, 100_000)
        for event in chunk
        if event.request_id == request_id
    ]


CASES = [
    pytest.param(*spec, case, id=f"{spec[0].rsplit('/', 1)[1]}-{case}")
    for spec in RPCS
    for case in ("ok", "denied", "invalid", "unauthenticated")
    if not (case == "invalid" and spec[0] in NO_INVALID_FORM)  # these take no argument that could be invalid
]


@pytest.mark.parametrize(("rpc", "role", "call", "fields", "case"), CASES)
def test_every_rpc_is_audited(
    world: World, rpc: str, role: str, call: Call, fields: tuple[str, ...], case: str
) -> None:
    request_id = "rq-" + uuid.uuid4().hex
    acting = {"ok": role, "invalid": role, "denied": "auditor" if role != "auditor" else "service"}.get(case, role)
    caller = world.client.with_token("pvt_" + "x" * 43) if case == "unauthenticated" else world.as_role(acting)
    try:
        call(world, caller, request_id, case != "invalid")
        code = grpc.StatusCode.OK
    except PiiVaultError as error:
        code = error.code
    expected_code = {
        "ok": grpc.StatusCode.OK,
        "denied": grpc.StatusCode.PERMISSION_DENIED,
        "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    }.get(case, grpc.StatusCode.INVALID_ARGUMENT)
    if rpc == KEYS + "SetMinDecryptionVersion" and case == "invalid":
        expected_code = grpc.StatusCode.FAILED_PRECONDITION
    assert code == expected_code

    events = _events(world, request_id)
    assert len(events) >= 1
    event = events[-1]
    assert event.action == rpc
    expected_outcome = {"ok": "ok", "denied": "denied", "unauthenticated": "unauthenticated"}.get(case, "invalid")
    if rpc == KEYS + "SetMinDecryptionVersion" and case == "invalid":
        expected_outcome = "failed_precondition"
    assert event.outcome == expected_outcome
    if case == "unauthenticated":
        assert event.principal == ""
    else:
        assert event.principal == f"{acting}-1"
        assert event.role == acting
    assert event.peer.startswith(("ipv4:", "ipv6:"))
    if (case == "ok" and rpc.startswith((CUSTOMER, CONSENT, PURCHASES))) or (
        case == "ok" and rpc.startswith(DSAR) and rpc != DSAR + "ListRequests"
    ):
        assert event.customer_ids
        assert set(fields) <= set(event.fields)
    if case == "ok" and rpc in (CUSTOMER + "GetCustomer", CUSTOMER + "FindCustomers"):
        assert event.purpose == PURPOSE
        assert "national_id" not in event.fields  # masked under customer_service: not disclosed, not recorded
    if case == "ok" and rpc.startswith(CONSENT + "GrantConsent"):
        assert event.purpose == "marketing_sms"
    if case == "ok" and rpc == CUSTOMER + "GetCustomer":
        assert event.customer_ids == (world.customer_id,)
    text = repr(events).encode()
    assert find_in_bytes(text, needles([world.person])) == []
    assert world.tokens[acting].encode() not in text
    assert world.vault.audit_verifier.verify().intact


def test_a_customers_access_history_is_queryable(world: World) -> None:
    service = world.as_role("service")
    for _ in range(3):
        service.customers.get(world.customer_id, purpose=PURPOSE, request_id="x")
    history = [
        event
        for chunk in AuditQueries(world.vault.database).events(EventFilter(customer_id=world.customer_id))
        for event in chunk
    ]
    assert [e.action.rsplit("/", 1)[1] for e in history] == ["CreateCustomer"] + ["GetCustomer"] * 3


def test_audit_query_filter_must_be_a_customer_id(world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        list(world.as_role("auditor").audit.query_events(customer_id="13800138000 张三", request_id="q"))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    text = repr(list(AuditQueries(world.vault.database).events(EventFilter()))).encode()
    assert b"13800138000" not in text


def test_a_database_error_in_the_audit_write_is_unavailable_and_returns_nothing(world: World) -> None:
    with world.vault.database.write() as connection:
        connection.exec_driver_sql("DROP TABLE audit_subjects")
    with pytest.raises(Unavailable) as caught:
        world.as_role("service").customers.get(world.customer_id, purpose=PURPOSE, request_id="broken")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "a dependency of the vault is unavailable; retry later"
    assert world.person.name not in str(caught.value) and world.person.name not in str(caught.value.__cause__)
