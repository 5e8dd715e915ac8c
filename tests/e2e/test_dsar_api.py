"""The DPO through the SDK: find by a differently written phone, export, erase; then nothing of the customer is
readable."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from piivault.client import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, PiiVault
from piivault.v1 import consent_pb2 as cpb
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import dsar_pb2 as dpb
from piivault.v1 import purchases_pb2 as ppb
from tests.support.people import People, customer_message, dpo
from tests.support.scan import find_in_bytes, needles
from vault.app import Vault
from vault.dsar.export import verify_package
from vault.dsar.models import DsarStatus, DsarType

# What these RPCs answer does not depend on where the KEK lives; the Vault Transit path is covered by the
# integration tests and tests/e2e/test_grpc_api.py, so this module runs with the local keyring only.
pytestmark = pytest.mark.local_keyring

AsRole = Callable[[str, str], PiiVault]


def test_a_dpo_exports_and_erases(vault: Vault, as_role: AsRole, people: People) -> None:
    pos, officer, auditor = as_role("pos-1", "service"), as_role("dpo-1", "dpo"), as_role("aud", "auditor")
    person = people.next()
    created = pos.customers.create(customer_message(person))
    customer_id = created.customer.customer_id
    # A purchase history and analytics consent, so the export and the erasure have purchases and a pseudonym.
    pos.consent.grant(
        customer_id,
        purpose="analytics",
        scope=cpb.CONSENT_SCOPE_STANDARD,
        notice_version="a1",
        notice_sha256="ab" * 32,
        channel=cpb.CONSENT_CHANNEL_WEB,
    )
    when = Timestamp()
    when.FromSeconds(1_767_225_600)
    for n in range(3):
        purchase = ppb.Purchase(source="pos", order_id=f"D-{n}", purchase_time=when, amount_minor=1200, currency="CNY")
        pos.purchases.record(customer_id, purchase)
    analyst = as_role("bi-1", "analyst")
    before = list(analyst.analytics.export_purchases())
    (pseudonym,) = {p.pseudonym for page in before for p in page.purchases}
    cursor = before[-1].next_cursor

    with pytest.raises(PermissionDenied):  # only the DPO runs data-subject requests
        pos.dsar.open(dpb.DSAR_TYPE_ACCESS, mobile=person.mobile)

    written_differently = "0086 " + " ".join(person.mobile[i : i + 4] for i in range(0, 11, 4))
    access = officer.dsar.open(dpb.DSAR_TYPE_ACCESS, mobile=written_differently).request
    assert access.customer_id == customer_id and access.status == dpb.DSAR_STATUS_RECEIVED and not access.overdue
    with pytest.raises(FailedPrecondition):
        officer.dsar.export_data(access.request_id)
    officer.dsar.verify(access.request_id)
    package = officer.dsar.export_data(access.request_id)
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

    with pytest.raises(InvalidArgument):
        officer.dsar.reject(access.request_id, reason=dpb.REJECTION_REASON_UNSPECIFIED, text="no")

    erasure = officer.dsar.open(dpb.DSAR_TYPE_ERASURE, customer_id=customer_id).request
    officer.dsar.verify(erasure.request_id)
    erased = officer.dsar.erase(erasure.request_id)
    assert erased.request.status == dpb.DSAR_STATUS_COMPLETED
    receipt = json.loads(erased.receipt)
    assert receipt["customer_id"] == customer_id and receipt["receipt_id"] == erased.request.receipt_id
    assert find_in_bytes(erased.receipt, needles([person])) == []

    with pytest.raises(NotFound):
        pos.customers.get(customer_id, purpose="customer_service")
    for found in (
        pos.customers.find(mobile=person.mobile, purpose="customer_service"),
        pos.customers.find(email=person.email, purpose="customer_service"),
        pos.customers.find(national_id=person.national_id, purpose="customer_service"),
    ):
        assert list(found.customers) == []
    with pytest.raises(NotFound):
        officer.dsar.open(dpb.DSAR_TYPE_ACCESS, mobile=person.mobile)

    listed = officer.dsar.list().requests
    assert {r.request_id: r.status for r in listed} == {
        access.request_id: dpb.DSAR_STATUS_COMPLETED,
        erasure.request_id: dpb.DSAR_STATUS_COMPLETED,
    }
    # The analytics side: the next incremental export carries a tombstone, and no export has a row for the pseudonym.
    after = list(analyst.analytics.export_purchases(cursor=cursor))
    assert [(t.pseudonym, t.reason) for page in after for t in page.tombstones] == [(pseudonym, "erased")]
    everything = list(analyst.analytics.export_purchases())
    assert pseudonym not in {p.pseudonym for page in everything for p in page.purchases}
    assert auditor.audit.verify_chain().intact


def test_only_the_dpo_reaches_data_subject_requests(vault: Vault, as_role: AsRole, people: People) -> None:
    """Every DsarService RPC × every other role: PERMISSION_DENIED, and no value of the customer in the refusal."""
    person = people.next()
    customer_id = as_role("pos-1", "service").customers.create(customer_message(person)).customer.customer_id
    dpo_caller = dpo()
    request_id = vault.dsar.open(dpo_caller, None, customer_id, DsarType.ERASURE).request_id
    vault.dsar.verify(dpo_caller, request_id)
    calls: dict[str, Callable[[PiiVault], object]] = {
        "OpenRequest": lambda c: c.dsar.open(dpb.DSAR_TYPE_ACCESS, mobile=person.mobile),
        "VerifyRequest": lambda c: c.dsar.verify(request_id),
        "RejectRequest": lambda c: c.dsar.reject(request_id, reason=dpb.REJECTION_REASON_OTHER, text="x"),
        "GetRequest": lambda c: c.dsar.get(request_id),
        "ListRequests": lambda c: c.dsar.list(),
        "ExportData": lambda c: c.dsar.export_data(request_id),
        "EraseCustomer": lambda c: c.dsar.erase(request_id),
        "RectifyCustomer": lambda c: c.dsar.rectify(request_id, pb.Customer(), fields=[]),
        "RestrictProcessing": lambda c: c.dsar.restrict(request_id),
        "LiftRestriction": lambda c: c.dsar.lift_restriction(customer_id),
        "SetLegalHold": lambda c: c.dsar.set_legal_hold(customer_id, hold=True),
    }
    service = dpb.DESCRIPTOR.services_by_name["DsarService"]
    assert set(calls) == {method.name for method in service.methods}
    for role in ("service", "support", "marketing", "analyst", "auditor", "admin"):
        caller = as_role(f"{role}-9", role)
        for name, call in calls.items():
            with pytest.raises(PermissionDenied) as denied:
                call(caller)
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED, (role, name)
            seen = (
                repr(denied.value).encode()
                + repr(denied.value.__cause__).encode()
                + repr(denied.value.trailing_metadata).encode()
            )
            assert find_in_bytes(seen, needles([person])) == [], (role, name)
    assert vault.dsar.get(dpo_caller, request_id).status is DsarStatus.VERIFIED
    assert vault.customers.get(dpo_caller, customer_id).customer_id == customer_id  # nothing was erased
