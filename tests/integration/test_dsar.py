"""The DPO's data-subject requests: export, erasure (legal hold, restriction), rectification, rejection, deadlines."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest
from sqlalchemy import select

from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.crypto import CryptoError, FieldCipher, FieldContext, SecretKey, Signer, verify_signature
from vault.customers.models import IdentifierKind, Profile
from vault.dsar.export import PackageError, verify_package
from vault.dsar.models import DsarStatus, DsarType, RejectionReason
from vault.dsar.service import DsarService, WrongState
from vault.errors import ErasureBlocked, InvalidArgument, NotFound, ProcessingRestricted
from vault.keys.provider import WrappedKey
from vault.storage.models import ConsentRecordRow, CustomerRow

CREATE = "/piivault.v1.CustomerService/CreateCustomer"
DPO = dpo("/piivault.v1.DsarService/Test")
SMS = ConsentRequest(
    purpose="marketing_sms",
    scope=ConsentScope.STANDARD,
    channel=Channel.POS,
    notice_version="v1",
    notice_sha256="ab" * 32,
    evidence_ref="receipt 77",
)


def verified(vault: Vault, customer_id: str, type_: DsarType) -> str:
    request = vault.dsar.open(DPO, None, customer_id, type_)
    assert request.status is DsarStatus.RECEIVED and request.due_date == request.open_time.date() + dt.timedelta(30)
    return vault.dsar.verify(DPO, request.request_id).request_id


def test_export_then_erase(vault: Vault, people: People) -> None:
    person = people.next()
    vault.customers.create(caller(), "", profile_of(people.next()))  # a bystander, whose data key stays
    created = vault.customers.create(caller("pos-1", action=CREATE), "", profile_of(person))
    vault.consents.grant(caller("pos-1"), created.customer_id, SMS)
    vault.customers.get(caller("crm-1"), created.customer_id)

    # Found by the phone written differently from how it was stored.
    request = vault.dsar.open(
        DPO, IdentifierKind.MOBILE, f"+86 {person.mobile[:3]}-{person.mobile[3:]}", DsarType.ACCESS
    )
    assert request.customer_id == created.customer_id
    with pytest.raises(WrongState):
        vault.dsar.export(DPO, request.request_id)  # not verified yet
    vault.dsar.verify(DPO, request.request_id)
    package = vault.dsar.export(DPO, request.request_id)
    manifest = verify_package(package, vault.dsar.public_key)
    assert manifest["customer_id"] == created.customer_id
    archive = zipfile.ZipFile(io.BytesIO(package))
    profile = json.loads(archive.read("profile.json"))
    mobile = profile["fields"]["mobile"]
    assert (mobile["value"], mobile["source"]) == ("+86" + person.mobile, "pos-1")
    collected = dt.datetime.fromisoformat(mobile["collected_at"])
    assert abs(collected - created.create_time) < dt.timedelta(seconds=5)
    assert profile["fields"]["national_id"]["value"] == person.national_id
    consents = json.loads(archive.read("consents.json"))
    assert [(c["purpose"], c["action"], c["evidence_ref"]) for c in consents] == [
        ("marketing_sms", "grant", "receipt 77")
    ]
    access = json.loads(archive.read("access_log.json"))
    assert ("crm-1", "customer_service") in {(a["principal"], a["purpose"]) for a in access}
    assert json.loads(archive.read("purchases.json")) == []
    assert "access_log.csv" in archive.namelist() and "profile.csv" in archive.namelist()
    assert vault.dsar.get(DPO, request.request_id).status is DsarStatus.COMPLETED

    # A package altered after export does not verify.
    tampered = io.BytesIO()
    with zipfile.ZipFile(tampered, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            out.writestr(name, data.replace(b"pos-1", b"pos-2") if name == "profile.json" else data)
    with pytest.raises(PackageError, match=r"profile\.json"):
        verify_package(tampered.getvalue(), vault.dsar.public_key)

    with vault.database.read() as connection:
        row = connection.execute(select(CustomerRow).where(CustomerRow.customer_id == created.customer_id)).one()
    erasure = verified(vault, created.customer_id, DsarType.ERASURE)
    completed, receipt_bytes = vault.dsar.erase(DPO, erasure)
    assert completed.status is DsarStatus.COMPLETED and completed.receipt_id.startswith("rcpt_")
    receipt = json.loads(receipt_bytes)
    signature = bytes.fromhex(receipt.pop("signature"))
    key = bytes.fromhex(receipt.pop("public_key"))
    body = json.dumps(receipt, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    assert key == vault.dsar.public_key and verify_signature(key, b"piivault-erasure-receipt/1\n" + body, signature)

    with pytest.raises(NotFound):
        vault.customers.get(dpo(), created.customer_id)
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, person.mobile) == []
    # No ciphertext left in the database decrypts: the erased customer's consent evidence is sealed under a key that
    # is gone, and no data key still in the database opens it.
    with vault.database.read() as connection:
        assert (
            connection.execute(select(CustomerRow).where(CustomerRow.customer_id == created.customer_id)).first()
            is None
        )
        remaining = connection.execute(select(CustomerRow.wrapped_dek, CustomerRow.kek_version)).all()
        evidence = connection.execute(
            select(ConsentRecordRow.evidence_ct, ConsentRecordRow.record_id).where(
                ConsentRecordRow.customer_id == created.customer_id
            )
        ).all()
    assert evidence and all(b"receipt 77" not in bytes(e.evidence_ct) for e in evidence)
    keys = vault.provider.unwrap([WrappedKey(r.wrapped_dek, r.kek_version) for r in remaining])
    assert keys
    for sealed in evidence:
        for data_key in keys:
            with pytest.raises(CryptoError):
                FieldCipher(data_key, 1).decrypt(
                    bytes(sealed.evidence_ct), FieldContext("consent_records", sealed.record_id, "evidence_ref")
                )
    assert row.wrapped_dek not in {r.wrapped_dek for r in remaining}
    # ... which is why the ledger replays erasures after a restore (tests/e2e/test_erasure_replay.py).
    assert vault.shredder.subject(created.customer_id) in vault.shredder._ledger.subjects()
    assert vault.audit_verifier.verify().intact
    # Erasing again only reports the request as done.
    with pytest.raises(WrongState):
        vault.dsar.erase(DPO, erasure)


def test_legal_hold_and_restriction_block_erasure(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    vault.dsar.set_legal_hold(DPO, customer.customer_id, hold=True)
    erasure = verified(vault, customer.customer_id, DsarType.ERASURE)
    with pytest.raises(ErasureBlocked, match="legal hold"):
        vault.dsar.erase(DPO, erasure)
    vault.dsar.set_legal_hold(DPO, customer.customer_id, hold=False)

    restriction = verified(vault, customer.customer_id, DsarType.RESTRICTION)
    vault.dsar.restrict(DPO, restriction)
    with pytest.raises(ProcessingRestricted):
        vault.customers.get(caller(), customer.customer_id)
    with pytest.raises(ProcessingRestricted):
        vault.customers.find(caller(), IdentifierKind.MEMBER_ID, customer.profile.member_id)
    with pytest.raises(ProcessingRestricted):
        vault.customers.update(caller(), Profile(name="新名字"), customer.customer_id, ["name"], 1)
    assert customer.customer_id not in [c.customer_id for c in vault.customers.page(caller(), 500, "").customers]
    access = verified(vault, customer.customer_id, DsarType.ACCESS)
    verify_package(vault.dsar.export(DPO, access))  # the DPO's export is not refused
    with pytest.raises(ErasureBlocked, match="restricted"):
        vault.dsar.erase(DPO, erasure)
    vault.dsar.lift_restriction(DPO, customer.customer_id)
    assert vault.customers.get(caller(), customer.customer_id).customer_id == customer.customer_id
    vault.dsar.erase(DPO, erasure)
    with pytest.raises(NotFound):
        vault.customers.get(caller(), customer.customer_id)


def test_rectification_rekeys_so_old_values_do_not_decrypt(vault: Vault, people: People) -> None:
    person, new = people.next(), people.next()
    customer = vault.customers.create(caller(), "", profile_of(person))
    with vault.database.read() as connection:
        before = connection.execute(select(CustomerRow).where(CustomerRow.customer_id == customer.customer_id)).one()
    request = verified(vault, customer.customer_id, DsarType.RECTIFICATION)
    vault.dsar.rectify(DPO, request, Profile(mobile=new.mobile), ["mobile"])
    read = vault.customers.get(dpo(), customer.customer_id)
    assert read.profile.mobile == "+86" + new.mobile and read.profile.name == person.name and read.version == 2
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, person.mobile) == []
    with vault.database.read() as connection:
        after = connection.execute(select(CustomerRow).where(CustomerRow.customer_id == customer.customer_id)).one()
    assert after.wrapped_dek != before.wrapped_dek
    current_dek = vault.provider.unwrap([WrappedKey(after.wrapped_dek, after.kek_version)])[0]
    context = FieldContext("customers", customer.customer_id, "mobile")
    with pytest.raises(CryptoError):  # the old ciphertext (a dead row version, a WAL page) is noise under the new key
        FieldCipher(current_dek, 1).decrypt(bytes(before.mobile_ct), context)
    assert vault.dsar.get(DPO, request).status is DsarStatus.COMPLETED


def test_rejection_needs_a_reason_and_overdue_requests_come_first(vault: Vault, people: People) -> None:
    ids = [vault.customers.create(caller(), "", profile_of(p)).customer_id for p in people.many(3)]
    old = vault.dsar.open(DPO, None, ids[0], DsarType.ACCESS)
    for reason, text, field in ((None, "身份无法核实", "reason"), (RejectionReason.OTHER, "  ", "text")):
        with pytest.raises(InvalidArgument) as caught:
            vault.dsar.reject(DPO, old.request_id, reason, text)
        assert caught.value.violations[0].field == field
    rejected = vault.dsar.reject(DPO, old.request_id, RejectionReason.IDENTITY_NOT_VERIFIED, "身份证件与登记信息不符")
    assert rejected.status is DsarStatus.REJECTED
    assert vault.dsar.get(DPO, old.request_id).rejection_text == "身份证件与登记信息不符"

    early = vault.dsar.open(DPO, None, ids[1], DsarType.ERASURE)
    future: DsarService = _with_clock(vault, dt.timedelta(days=31))
    fresh = future.open(DPO, None, ids[2], DsarType.ACCESS)  # opened "31 days later": due in the future
    listed = future.list(DPO, None, False, 100)
    assert [r.request_id for r in listed][:1] == [early.request_id]
    by_id = {r.request_id: r for r in listed}
    assert by_id[early.request_id].overdue(future.today()) and not by_id[fresh.request_id].overdue(future.today())
    assert old.request_id in by_id and not by_id[old.request_id].overdue(future.today())
    assert [r.request_id for r in future.list(DPO, None, True, 100)] == [
        early.request_id
    ]  # rejected ones are not overdue


def _with_clock(vault: Vault, ahead: dt.timedelta) -> DsarService:
    """The same DSAR service seen from ``ahead`` in the future (signing is not exercised by these steps)."""
    return DsarService(
        vault.database,
        vault.writer,
        vault.audit,
        vault.customers,
        vault.consents,
        vault.shredder,
        vault.purchases,
        Signer(SecretKey.generate()),
        clock=lambda: dt.datetime.now(dt.UTC) + ahead,
    )


def test_a_refusal_inside_the_erasing_transaction_cancels_the_ledger_entry(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id

    def hold_arrived(connection: object) -> None:
        raise ErasureBlocked(True, customer)  # as if a legal hold had committed a moment before

    with pytest.raises(ErasureBlocked):
        vault.shredder.shred(DPO, customer, check=hold_arrived)
    assert vault.shredder.subject(customer) not in vault.shredder._ledger.subjects()
    assert vault.shredder.replay() == 0  # the next start erases nothing
    assert vault.customers.get(dpo(), customer).customer_id == customer


def test_replay_respects_a_legal_hold_placed_after_the_erasure_was_ledgered(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.dsar.set_legal_hold(DPO, customer, hold=True)
    vault.shredder._ledger.append(vault.shredder.subject(customer), dt.datetime.now(dt.UTC))  # a crash after this
    assert vault.shredder.replay() == 0
    assert vault.customers.get(dpo(), customer).customer_id == customer


def test_rectification_reseals_consent_evidence_and_rejection_texts(vault: Vault, people: People) -> None:
    person, new = people.next(), people.next()
    customer = vault.customers.create(caller(), "", profile_of(person)).customer_id
    vault.consents.grant(caller(), customer, SMS)
    rejected = vault.dsar.open(DPO, None, customer, DsarType.ERASURE)
    vault.dsar.reject(DPO, rejected.request_id, RejectionReason.LEGAL_RETENTION, "须保留至 2029 年的发票记录")
    request = verified(vault, customer, DsarType.RECTIFICATION)
    vault.dsar.rectify(DPO, request, Profile(mobile=new.mobile), ["mobile"])
    history = vault.consents.history(dpo(), customer, "", 0, "").records
    assert [r.evidence_ref for r in history] == ["receipt 77"]
    assert vault.dsar.get(DPO, rejected.request_id).rejection_text == "须保留至 2029 年的发票记录"
    access = verified(vault, customer, DsarType.ACCESS)
    verify_package(vault.dsar.export(DPO, access))  # the export reads the re-sealed evidence too
