"""Every RPC leaves the right audit event — succeeded, denied or invalid — and no personal data in it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from audit.events import AuditEvent
from audit.queries import AuditQueries, EventFilter
from piivault.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    dsar_pb2,
    dsar_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    purchases_pb2,
    purchases_pb2_grpc,
)
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
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
    channel: grpc.Channel
    person: Person
    customer_id: str
    tokens: dict[str, str]

    def metadata(self, role: str, request_id: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[role]}"), ("x-request-id", request_id))


# What an RPC records does not depend on where the KEK lives: the local keyring is enough (both databases still run).
pytestmark = pytest.mark.local_keyring


@pytest.fixture
def world(vault: Vault, channel: grpc.Channel, people: People) -> World:
    tokens = {
        role: vault.tokens.create(f"{role}-1", role).secret
        for role in ("service", "admin", "auditor", "dpo", "analyst")
    }
    person = people.next()
    stub = pb_grpc.CustomerServiceStub(channel)
    created = stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=customer_message(person)),
        metadata=(("authorization", f"Bearer {tokens['service']}"),),
    )
    return World(vault, channel, person, created.customer.customer_id, tokens)


Call = Callable[[World, tuple[tuple[str, str], ...], bool], object]


def _customers(world: World) -> pb_grpc.CustomerServiceStub:
    return pb_grpc.CustomerServiceStub(world.channel)


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


def _dsar(world: World) -> dsar_pb2_grpc.DsarServiceStub:
    return dsar_pb2_grpc.DsarServiceStub(world.channel)


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
        lambda w, md, ok: _customers(w).CreateCustomer(
            pb.CreateCustomerRequest(customer=pb.Customer(name="新客", mobile="13700001111" if ok else "12")),
            metadata=md,
        ),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "GetCustomer",
        "service",
        lambda w, md, ok: _customers(w).GetCustomer(
            pb.GetCustomerRequest(customer_id=w.customer_id if ok else "not-an-id", purpose=PURPOSE), metadata=md
        ),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "UpdateCustomer",
        "service",
        lambda w, md, ok: _customers(w).UpdateCustomer(
            pb.UpdateCustomerRequest(
                customer=pb.Customer(customer_id=w.customer_id, address="新地址"),
                update_mask=field_mask_pb2.FieldMask(paths=["address" if ok else "no_such_field"]),
                expected_version=1,
            ),
            metadata=md,
        ),
        (),  # the last event is the duplicate's erasure; the merge event before it names the fields gained
    ),
    (
        CUSTOMER + "FindCustomers",
        "service",
        lambda w, md, ok: _customers(w).FindCustomers(
            pb.FindCustomersRequest(mobile=w.person.mobile if ok else "abc", purpose=PURPOSE), metadata=md
        ),
        ("mobile", "email"),
    ),
    (
        CUSTOMER + "ListCustomers",
        "service",
        lambda w, md, ok: _customers(w).ListCustomers(
            pb.ListCustomersRequest(page_size=10 if ok else -1, purpose=PURPOSE), metadata=md
        ),
        ("mobile",),
    ),
    (
        CONSENT + "GrantConsent",
        "service",
        lambda w, md, ok: consent_pb2_grpc.ConsentServiceStub(w.channel).GrantConsent(
            consent_pb2.GrantConsentRequest(
                customer_id=w.customer_id,
                purpose="marketing_sms",
                scope=consent_pb2.CONSENT_SCOPE_STANDARD,
                notice_version="v3",
                notice_sha256=NOTICE_SHA256 if ok else "not-a-digest",
                channel=consent_pb2.CONSENT_CHANNEL_POS,
            ),
            metadata=md,
        ),
        (),
    ),
    (
        CONSENT + "WithdrawConsent",
        "service",
        lambda w, md, ok: consent_pb2_grpc.ConsentServiceStub(w.channel).WithdrawConsent(
            consent_pb2.WithdrawConsentRequest(
                customer_id=w.customer_id,
                purpose="marketing_sms" if ok else "order_fulfilment",
                channel=consent_pb2.CONSENT_CHANNEL_CALL_CENTRE,
            ),
            metadata=md,
        ),
        (),
    ),
    (
        CONSENT + "ListConsents",
        "service",
        lambda w, md, ok: consent_pb2_grpc.ConsentServiceStub(w.channel).ListConsents(
            consent_pb2.ListConsentsRequest(customer_id=w.customer_id if ok else "x"), metadata=md
        ),
        (),
    ),
    (
        CONSENT + "GetConsentHistory",
        "service",
        lambda w, md, ok: consent_pb2_grpc.ConsentServiceStub(w.channel).GetConsentHistory(
            consent_pb2.GetConsentHistoryRequest(customer_id=w.customer_id, page_size=10 if ok else -1), metadata=md
        ),
        (),
    ),
    (
        DSAR + "OpenRequest",
        "dpo",
        lambda w, md, ok: _dsar(w).OpenRequest(
            dsar_pb2.OpenRequestRequest(
                customer_id=w.customer_id, type=dsar_pb2.DSAR_TYPE_ACCESS if ok else dsar_pb2.DSAR_TYPE_UNSPECIFIED
            ),
            metadata=md,
        ),
        (),
    ),
    (
        DSAR + "VerifyRequest",
        "dpo",
        lambda w, md, ok: _dsar(w).VerifyRequest(
            dsar_pb2.VerifyRequestRequest(request_id=_id(w, DsarType.ACCESS, ok, verified=False)), metadata=md
        ),
        (),
    ),
    (
        DSAR + "RejectRequest",
        "dpo",
        lambda w, md, ok: _dsar(w).RejectRequest(
            dsar_pb2.RejectRequestRequest(
                request_id=_request(w, DsarType.ACCESS, verified=False),
                reason=dsar_pb2.REJECTION_REASON_DUPLICATE if ok else dsar_pb2.REJECTION_REASON_UNSPECIFIED,
                text="已于上月答复同一请求",
            ),
            metadata=md,
        ),
        (),
    ),
    (
        DSAR + "GetRequest",
        "dpo",
        lambda w, md, ok: _dsar(w).GetRequest(
            dsar_pb2.GetRequestRequest(request_id=_id(w, DsarType.ACCESS, ok)), metadata=md
        ),
        (),
    ),
    (
        DSAR + "ListRequests",
        "dpo",
        lambda w, md, ok: _dsar(w).ListRequests(dsar_pb2.ListRequestsRequest(page_size=10 if ok else -1), metadata=md),
        (),
    ),
    (
        DSAR + "ExportData",
        "dpo",
        lambda w, md, ok: list(
            _dsar(w).ExportData(dsar_pb2.ExportDataRequest(request_id=_id(w, DsarType.ACCESS, ok)), metadata=md)
        ),
        ("mobile", "name", "national_id"),
    ),
    (
        DSAR + "EraseCustomer",
        "dpo",
        lambda w, md, ok: _dsar(w).EraseCustomer(
            dsar_pb2.EraseCustomerRequest(request_id=_id(w, DsarType.ERASURE, ok)), metadata=md
        ),
        (),
    ),
    (
        DSAR + "RectifyCustomer",
        "dpo",
        lambda w, md, ok: _dsar(w).RectifyCustomer(
            dsar_pb2.RectifyCustomerRequest(
                request_id=_request(w, DsarType.RECTIFICATION),
                customer=pb.Customer(name="更正后的名字"),
                update_mask=field_mask_pb2.FieldMask(paths=["name" if ok else "no_such_field"]),
            ),
            metadata=md,
        ),
        ("name",),
    ),
    (
        DSAR + "RestrictProcessing",
        "dpo",
        lambda w, md, ok: _dsar(w).RestrictProcessing(
            dsar_pb2.RestrictProcessingRequest(request_id=_id(w, DsarType.RESTRICTION, ok)), metadata=md
        ),
        (),
    ),
    (
        DSAR + "LiftRestriction",
        "dpo",
        lambda w, md, ok: _dsar(w).LiftRestriction(
            dsar_pb2.LiftRestrictionRequest(customer_id=w.customer_id if ok else "x"), metadata=md
        ),
        (),
    ),
    (
        DSAR + "SetLegalHold",
        "dpo",
        lambda w, md, ok: _dsar(w).SetLegalHold(
            dsar_pb2.SetLegalHoldRequest(customer_id=w.customer_id if ok else "x", hold=True), metadata=md
        ),
        (),
    ),
    (
        CUSTOMER + "ImportCustomers",
        "service",
        lambda w, md, ok: _customers(w).ImportCustomers(
            iter(
                [
                    pb.ImportCustomersRequest(
                        source="crm", row=2, customer=pb.Customer(name="导入", mobile="13700002222")
                    )
                ]
            ),
            metadata=md,
        ),
        ("mobile", "name"),
    ),
    (
        CUSTOMER + "MergeCustomers",
        "service",
        lambda w, md, ok: _customers(w).MergeCustomers(
            pb.MergeCustomersRequest(survivor_id=w.customer_id, duplicate_id=_duplicate(w) if ok else w.customer_id),
            metadata=md,
        ),
        (),  # the last event is the duplicate's erasure; the merge event before it names the fields gained
    ),
    (
        CUSTOMER + "SplitCustomer",
        "service",
        lambda w, md, ok: _customers(w).SplitCustomer(
            pb.SplitCustomerRequest(customer_id=w.customer_id, fields=["email"] if ok else ["shoe_size"]),
            metadata=md,
        ),
        ("email",),
    ),
    (
        PURCHASES + "RecordPurchase",
        "service",
        lambda w, md, ok: purchases_pb2_grpc.PurchaseServiceStub(w.channel).RecordPurchase(
            purchases_pb2.RecordPurchaseRequest(
                customer_id=w.customer_id, purchase=_purchase(uuid.uuid4().hex, "CNY" if ok else "元")
            ),
            metadata=md,
        ),
        (),
    ),
    (
        PURCHASES + "RecordPurchases",
        "service",
        lambda w, md, ok: purchases_pb2_grpc.PurchaseServiceStub(w.channel).RecordPurchases(
            iter(
                [
                    purchases_pb2.RecordPurchasesRequest(
                        customer_id=w.customer_id, purchase=_purchase(uuid.uuid4().hex)
                    )
                    for _ in range(3)
                ]
            ),
            metadata=md,
        ),
        (),
    ),
    (
        ANALYTICS + "ExportPurchases",
        "analyst",
        lambda w, md, ok: list(
            analytics_pb2_grpc.AnalyticsServiceStub(w.channel).ExportPurchases(
                analytics_pb2.ExportPurchasesRequest(cursor="" if ok else "not-a-cursor"), metadata=md
            )
        ),
        (),
    ),
    (
        KEYS + "GetKeyStatus",
        "admin",
        lambda w, md, ok: keys_pb2_grpc.KeyServiceStub(w.channel).GetKeyStatus(
            keys_pb2.GetKeyStatusRequest(), metadata=md
        ),
        (),
    ),
    (
        KEYS + "RotateKek",
        "admin",
        lambda w, md, ok: list(
            keys_pb2_grpc.KeyServiceStub(w.channel).RotateKek(keys_pb2.RotateKekRequest(), metadata=md)
        ),
        (),
    ),
    (
        KEYS + "RewrapKeys",
        "admin",
        lambda w, md, ok: list(
            keys_pb2_grpc.KeyServiceStub(w.channel).RewrapKeys(keys_pb2.RewrapKeysRequest(), metadata=md)
        ),
        (),
    ),
    (
        KEYS + "SetMinDecryptionVersion",
        "admin",
        lambda w, md, ok: keys_pb2_grpc.KeyServiceStub(w.channel).SetMinDecryptionVersion(
            keys_pb2.SetMinDecryptionVersionRequest(version=1 if ok else 99), metadata=md
        ),
        (),
    ),
    (
        AUDIT + "QueryEvents",
        "auditor",
        lambda w, md, ok: list(
            audit_pb2_grpc.AuditServiceStub(w.channel).QueryEvents(
                audit_pb2.QueryEventsRequest(page_size=5 if ok else -5), metadata=md
            )
        ),
        (),
    ),
    (
        AUDIT + "VerifyChain",
        "auditor",
        lambda w, md, ok: audit_pb2_grpc.AuditServiceStub(w.channel).VerifyChain(
            audit_pb2.VerifyChainRequest(), metadata=md
        ),
        (),
    ),
    (
        AUDIT + "GetCheckpoint",
        "auditor",
        lambda w, md, ok: audit_pb2_grpc.AuditServiceStub(w.channel).GetCheckpoint(
            audit_pb2.GetCheckpointRequest(), metadata=md
        ),
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
    metadata = (
        (("x-request-id", request_id), ("authorization", "Bearer pvt_" + "x" * 43))
        if case == "unauthenticated"
        else world.metadata(acting, request_id)
    )
    try:
        call(world, metadata, case != "invalid")
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
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
    stub = _customers(world)
    for _ in range(3):
        stub.GetCustomer(
            pb.GetCustomerRequest(customer_id=world.customer_id, purpose=PURPOSE),
            metadata=world.metadata("service", "x"),
        )
    history = [
        event
        for chunk in AuditQueries(world.vault.database).events(EventFilter(customer_id=world.customer_id))
        for event in chunk
    ]
    assert [e.action.rsplit("/", 1)[1] for e in history] == ["CreateCustomer"] + ["GetCustomer"] * 3


def test_audit_query_filter_must_be_a_customer_id(world: World) -> None:
    audit = audit_pb2_grpc.AuditServiceStub(world.channel)
    with pytest.raises(grpc.RpcError) as caught:
        list(
            audit.QueryEvents(
                audit_pb2.QueryEventsRequest(customer_id="13800138000 张三"), metadata=world.metadata("auditor", "q")
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = repr(list(AuditQueries(world.vault.database).events(EventFilter()))).encode()
    assert b"13800138000" not in text


def test_a_database_error_in_the_audit_write_is_unavailable_and_returns_nothing(world: World) -> None:
    with world.vault.database.write() as connection:
        connection.exec_driver_sql("DROP TABLE audit_subjects")
    with pytest.raises(grpc.RpcError) as caught:
        _customers(world).GetCustomer(
            pb.GetCustomerRequest(customer_id=world.customer_id, purpose=PURPOSE),
            metadata=world.metadata("service", "broken"),
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "a dependency of the vault is unavailable; retry later"
    assert world.person.name not in str(caught.value)
