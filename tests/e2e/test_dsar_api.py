"""The DPO over gRPC: find by a differently written phone, export, erase; then nothing of the customer is readable."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from piivault.v1 import analytics_pb2 as apb
from piivault.v1 import analytics_pb2_grpc as apb_grpc
from piivault.v1 import audit_pb2, audit_pb2_grpc
from piivault.v1 import consent_pb2 as cpb
from piivault.v1 import consent_pb2_grpc as cpb_grpc
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from piivault.v1 import dsar_pb2 as dpb
from piivault.v1 import dsar_pb2_grpc as dpb_grpc
from piivault.v1 import purchases_pb2 as ppb
from piivault.v1 import purchases_pb2_grpc as ppb_grpc
from tests.support.people import People, customer_message, dpo
from tests.support.scan import find_in_bytes, needles
from vault.app import Vault
from vault.dsar.export import verify_package
from vault.dsar.models import DsarStatus, DsarType

Metadata = tuple[tuple[str, str], ...]


def bearer(vault: Vault, principal: str, role: str) -> Metadata:
    return (("authorization", f"Bearer {vault.tokens.create(principal, role).secret}"),)


def test_a_dpo_exports_and_erases(vault: Vault, channel: grpc.Channel, people: People) -> None:
    pos, officer, auditor = (
        bearer(vault, "pos-1", "service"),
        bearer(vault, "dpo-1", "dpo"),
        bearer(vault, "aud", "auditor"),
    )
    customers, dsar = pb_grpc.CustomerServiceStub(channel), dpb_grpc.DsarServiceStub(channel)
    person = people.next()
    created = customers.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(person)), metadata=pos)
    customer_id = created.customer.customer_id
    # A purchase history and analytics consent, so the export and the erasure have purchases and a pseudonym.
    cpb_grpc.ConsentServiceStub(channel).GrantConsent(
        cpb.GrantConsentRequest(
            customer_id=customer_id,
            purpose="analytics",
            scope=cpb.CONSENT_SCOPE_STANDARD,
            notice_version="a1",
            notice_sha256="ab" * 32,
            channel=cpb.CONSENT_CHANNEL_WEB,
        ),
        metadata=pos,
    )
    when = Timestamp()
    when.FromSeconds(1_767_225_600)
    for n in range(3):
        purchase = ppb.Purchase(source="pos", order_id=f"D-{n}", purchase_time=when, amount_minor=1200, currency="CNY")
        ppb_grpc.PurchaseServiceStub(channel).RecordPurchase(
            ppb.RecordPurchaseRequest(customer_id=customer_id, purchase=purchase), metadata=pos
        )
    analyst = bearer(vault, "bi-1", "analyst")
    feed = apb_grpc.AnalyticsServiceStub(channel)
    before = list(feed.ExportPurchases(apb.ExportPurchasesRequest(), metadata=analyst))
    (pseudonym,) = {p.pseudonym for page in before for p in page.purchases}
    cursor = before[-1].next_cursor

    with pytest.raises(grpc.RpcError) as denied:  # only the DPO runs data-subject requests
        dsar.OpenRequest(dpb.OpenRequestRequest(mobile=person.mobile, type=dpb.DSAR_TYPE_ACCESS), metadata=pos)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    written_differently = "0086 " + " ".join(person.mobile[i : i + 4] for i in range(0, 11, 4))
    access = dsar.OpenRequest(
        dpb.OpenRequestRequest(mobile=written_differently, type=dpb.DSAR_TYPE_ACCESS), metadata=officer
    ).request
    assert access.customer_id == customer_id and access.status == dpb.DSAR_STATUS_RECEIVED and not access.overdue
    with pytest.raises(grpc.RpcError) as early:
        list(dsar.ExportData(dpb.ExportDataRequest(request_id=access.request_id), metadata=officer))
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    dsar.VerifyRequest(dpb.VerifyRequestRequest(request_id=access.request_id), metadata=officer)
    package = b"".join(
        part.chunk for part in dsar.ExportData(dpb.ExportDataRequest(request_id=access.request_id), metadata=officer)
    )
    manifest = verify_package(package, vault.dsar.public_key)
    archive = zipfile.ZipFile(io.BytesIO(package))
    assert [p["order_id"] for p in json.loads(archive.read("purchases.json"))] == ["D-0", "D-1", "D-2"]
    assert [c["purpose"] for c in json.loads(archive.read("consents.json"))] == ["analytics"]
    assert any(a["action"] == "RecordPurchase" for a in json.loads(archive.read("access_log.json")))
    assert {f["name"] for f in manifest["files"]} >= {
        "profile.json",
        "consents.json",
        "purchases.json",
        "access_log.json",
    }

    with pytest.raises(grpc.RpcError) as no_reason:
        dsar.RejectRequest(dpb.RejectRequestRequest(request_id=access.request_id, text="no"), metadata=officer)
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    erasure = dsar.OpenRequest(
        dpb.OpenRequestRequest(customer_id=customer_id, type=dpb.DSAR_TYPE_ERASURE), metadata=officer
    ).request
    dsar.VerifyRequest(dpb.VerifyRequestRequest(request_id=erasure.request_id), metadata=officer)
    erased = dsar.EraseCustomer(dpb.EraseCustomerRequest(request_id=erasure.request_id), metadata=officer)
    assert erased.request.status == dpb.DSAR_STATUS_COMPLETED
    receipt = json.loads(erased.receipt)
    assert receipt["customer_id"] == customer_id and receipt["receipt_id"] == erased.request.receipt_id
    assert find_in_bytes(erased.receipt, needles([person])) == []

    with pytest.raises(grpc.RpcError) as gone:
        customers.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id, purpose="customer_service"), metadata=pos)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    for request in (
        pb.FindCustomersRequest(mobile=person.mobile, purpose="customer_service"),
        pb.FindCustomersRequest(email=person.email, purpose="customer_service"),
        pb.FindCustomersRequest(national_id=person.national_id, purpose="customer_service"),
    ):
        assert list(customers.FindCustomers(request, metadata=pos).customers) == []
    with pytest.raises(grpc.RpcError) as gone_for_dpo:
        dsar.OpenRequest(dpb.OpenRequestRequest(mobile=person.mobile, type=dpb.DSAR_TYPE_ACCESS), metadata=officer)
    assert gone_for_dpo.value.code() == grpc.StatusCode.NOT_FOUND

    listed = dsar.ListRequests(dpb.ListRequestsRequest(), metadata=officer).requests
    assert {r.request_id: r.status for r in listed} == {
        access.request_id: dpb.DSAR_STATUS_COMPLETED,
        erasure.request_id: dpb.DSAR_STATUS_COMPLETED,
    }
    # The analytics side: the next incremental export carries a tombstone, and no export has a row for the pseudonym.
    after = list(feed.ExportPurchases(apb.ExportPurchasesRequest(cursor=cursor), metadata=analyst))
    assert [(t.pseudonym, t.reason) for page in after for t in page.tombstones] == [(pseudonym, "erased")]
    everything = list(feed.ExportPurchases(apb.ExportPurchasesRequest(), metadata=analyst))
    assert pseudonym not in {p.pseudonym for page in everything for p in page.purchases}
    verdict = audit_pb2_grpc.AuditServiceStub(channel).VerifyChain(audit_pb2.VerifyChainRequest(), metadata=auditor)
    assert verdict.intact


def test_only_the_dpo_reaches_data_subject_requests(vault: Vault, channel: grpc.Channel, people: People) -> None:
    """Every DsarService RPC × every other role: PERMISSION_DENIED, and no value of the customer in the refusal."""
    person = people.next()
    pos = bearer(vault, "pos-1", "service")
    customer_id = (
        pb_grpc.CustomerServiceStub(channel)
        .CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(person)), metadata=pos)
        .customer.customer_id
    )
    dpo_caller = dpo()
    request_id = vault.dsar.open(dpo_caller, None, customer_id, DsarType.ERASURE).request_id
    vault.dsar.verify(dpo_caller, request_id)
    stub = dpb_grpc.DsarServiceStub(channel)
    calls: dict[str, Callable[[Metadata], object]] = {
        "OpenRequest": lambda md: stub.OpenRequest(
            dpb.OpenRequestRequest(mobile=person.mobile, type=dpb.DSAR_TYPE_ACCESS), metadata=md
        ),
        "VerifyRequest": lambda md: stub.VerifyRequest(dpb.VerifyRequestRequest(request_id=request_id), metadata=md),
        "RejectRequest": lambda md: stub.RejectRequest(
            dpb.RejectRequestRequest(request_id=request_id, reason=dpb.REJECTION_REASON_OTHER, text="x"), metadata=md
        ),
        "GetRequest": lambda md: stub.GetRequest(dpb.GetRequestRequest(request_id=request_id), metadata=md),
        "ListRequests": lambda md: stub.ListRequests(dpb.ListRequestsRequest(), metadata=md),
        "ExportData": lambda md: list(stub.ExportData(dpb.ExportDataRequest(request_id=request_id), metadata=md)),
        "EraseCustomer": lambda md: stub.EraseCustomer(dpb.EraseCustomerRequest(request_id=request_id), metadata=md),
        "RectifyCustomer": lambda md: stub.RectifyCustomer(
            dpb.RectifyCustomerRequest(request_id=request_id), metadata=md
        ),
        "RestrictProcessing": lambda md: stub.RestrictProcessing(
            dpb.RestrictProcessingRequest(request_id=request_id), metadata=md
        ),
        "LiftRestriction": lambda md: stub.LiftRestriction(
            dpb.LiftRestrictionRequest(customer_id=customer_id), metadata=md
        ),
        "SetLegalHold": lambda md: stub.SetLegalHold(
            dpb.SetLegalHoldRequest(customer_id=customer_id, hold=True), metadata=md
        ),
    }
    service = dpb.DESCRIPTOR.services_by_name["DsarService"]
    assert set(calls) == {method.name for method in service.methods}
    for role in ("service", "support", "marketing", "analyst", "auditor", "admin"):
        metadata = bearer(vault, f"{role}-9", role)
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as denied:
                call(metadata)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, name)
            seen = repr(denied.value).encode() + repr(denied.value.trailing_metadata()).encode()
            assert find_in_bytes(seen, needles([person])) == [], (role, name)
    assert vault.dsar.get(dpo_caller, request_id).status is DsarStatus.VERIFIED
    assert vault.customers.get(dpo_caller, customer_id).customer_id == customer_id  # nothing was erased
