"""The consent ledger and its enforcement on reads: grant, withdraw, history, minors, sensitive fields, lists."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from audit.events import Caller
from consent.models import Channel, ConsentAction, ConsentRequest, ConsentScope, ConsentState, GivenBy
from tests.support.people import People, caller, dpo, national_id, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import PERSONAL_FIELDS, IdentifierKind
from vault.errors import (
    ConsentRequired,
    GuardianRequired,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    PurposeNotAllowed,
    ResourceExhausted,
)
from vault.keys.provider import KeyProvider
from vault.storage.db import Database
from vault.storage.models import ConsentRecordRow, ConsentStateRow

NOTICE = "尊敬的顾客：我们将通过短信向您发送优惠信息。版本 2026-03"
NOTICE_SHA256 = hashlib.sha256(NOTICE.encode()).hexdigest()
POS = caller("pos-shanghai-01", "service", "/piivault.v1.ConsentService/GrantConsent")
MARKETING = caller("crm-campaigns", "marketing", "/piivault.v1.CustomerService/GetCustomer", purpose="marketing_sms")


def sms(scope: ConsentScope = ConsentScope.STANDARD, **changes: Any) -> ConsentRequest:
    request = ConsentRequest(
        purpose="marketing_sms",
        scope=scope,
        channel=Channel.POS,
        notice_version="2026-03",
        notice_sha256=NOTICE_SHA256,
        evidence_ref="receipt 0042-7781",
    )
    return dataclasses.replace(request, **changes)


def withdrawal(purpose: str = "marketing_sms") -> ConsentRequest:
    return ConsentRequest(purpose=purpose, scope=ConsentScope.STANDARD, channel=Channel.CALL_CENTRE)


def test_grant_read_withdraw_refused_and_history(vault: Vault, people: People) -> None:
    person = people.next()
    customer = vault.customers.create(caller(), "", profile_of(person))
    with pytest.raises(ConsentRequired):
        vault.customers.get(MARKETING, customer.customer_id)

    granted = vault.consents.grant(POS, customer.customer_id, sms())
    read = vault.customers.get(MARKETING, customer.customer_id)
    assert read.profile.mobile == "+86" + person.mobile and read.profile.name == person.name
    assert "email" in read.masked_fields and read.profile.email != person.email
    assert "national_id" in read.masked_fields and person.national_id not in repr(dataclasses.asdict(read))

    withdrawn = vault.consents.withdraw(POS, customer.customer_id, withdrawal(), all_scopes=True)
    with pytest.raises(ConsentRequired) as refused:
        vault.customers.get(MARKETING, customer.customer_id)  # the very next read
    assert refused.value.subjects == (customer.customer_id,)
    # Contract purposes never depended on that consent (PIPL art. 16).
    assert vault.customers.get(caller(), customer.customer_id).profile.mobile == "+86" + person.mobile

    page = vault.consents.history(dpo(), customer.customer_id, "", 0, "")
    assert [(r.revision, r.action) for r in page.records] == [(1, ConsentAction.GRANT), (2, ConsentAction.WITHDRAW)]
    first, second = page.records
    assert first == granted and second == withdrawn[0]
    assert first.notice_sha256 == bytes.fromhex(NOTICE_SHA256) and first.notice_version == "2026-03"
    assert first.channel is Channel.POS and second.channel is Channel.CALL_CENTRE
    assert first.actor == "pos-shanghai-01" and first.evidence_ref == "receipt 0042-7781"
    assert first.record_time <= second.record_time
    states = {(s.purpose, s.scope): s.state for s in vault.consents.current(dpo(), customer.customer_id)}
    assert states[("marketing_sms", ConsentScope.STANDARD)] is ConsentState.WITHDRAWN
    assert states[("marketing_email", ConsentScope.STANDARD)] is ConsentState.NOT_GIVEN
    assert states[("identity_verification", ConsentScope.SENSITIVE)] is ConsentState.NOT_GIVEN


def test_the_evidence_reference_is_stored_encrypted(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    vault.consents.grant(POS, customer.customer_id, sms(evidence_ref="paper form 13912345678"))
    with vault.database.read() as connection:
        stored = connection.execute(select(ConsentRecordRow.evidence_ct)).scalar_one()
    assert stored is not None and b"13912345678" not in bytes(stored)


def test_a_customer_under_14_needs_a_guardian(vault: Vault, people: People) -> None:
    today = dt.datetime.now(dt.UTC).date()
    child_birth = today.replace(year=today.year - 10)
    by_birth_date = profile_of(people.next(), birth_date=child_birth.isoformat(), national_id="")
    # No birth date given: the one inside the national id counts.
    by_national_id = profile_of(people.next(), birth_date="", national_id=national_id(child_birth, 5))
    for profile in (by_birth_date, by_national_id):
        child = vault.customers.create(caller(), "", profile)
        with pytest.raises(GuardianRequired):
            vault.consents.grant(POS, child.customer_id, sms())
        with pytest.raises(ConsentRequired):
            vault.customers.get(MARKETING, child.customer_id)
        record = vault.consents.grant(POS, child.customer_id, sms(given_by=GivenBy.GUARDIAN))
        assert record.given_by is GivenBy.GUARDIAN
        assert vault.customers.get(MARKETING, child.customer_id).profile.mobile == "+86" + profile.mobile
    # Turning 14 on the birthday: from then on the customer's own consent counts.
    fourteen = today.replace(year=today.year - 14) if (today.month, today.day) != (2, 29) else today
    teen = vault.customers.create(caller(), "", profile_of(people.next(), birth_date=fourteen.isoformat()))
    vault.consents.grant(POS, teen.customer_id, sms())


def test_a_subject_consent_does_not_count_for_a_child(vault: Vault, people: People) -> None:
    """A consent recorded while the birth date was unknown does not cover a customer later found to be 10."""
    today = dt.datetime.now(dt.UTC).date()
    customer = vault.customers.create(caller(), "", profile_of(people.next(), birth_date="", national_id=""))
    vault.consents.grant(POS, customer.customer_id, sms())
    assert vault.customers.get(MARKETING, customer.customer_id).profile.mobile
    vault.customers.update(
        caller(),
        profile_of(people.next(), birth_date=today.replace(year=today.year - 10).isoformat()),
        customer.customer_id,
        ["birth_date"],
        expected_version=1,
    )
    with pytest.raises(ConsentRequired):
        vault.customers.get(MARKETING, customer.customer_id)
    # The vault withdrew that consent itself, so nothing else (the analytics feed) goes on counting it.
    last = vault.consents.history(dpo(), customer.customer_id, "", 0, "").records[-1]
    assert (last.action, last.channel, last.actor) == (ConsentAction.WITHDRAW, Channel.SYSTEM, "system:age")


def test_sensitive_fields_need_the_purpose_and_a_separate_consent(vault: Vault, people: People) -> None:
    person = people.next()
    customer = vault.customers.create(caller(), "", profile_of(person))
    checker = caller("pos-shanghai-01", "service", purpose="identity_verification")
    counter = caller("store-staff", "support", purpose="identity_verification")
    assert "national_id" in vault.customers.get(checker, customer.customer_id).masked_fields
    with pytest.raises(InvalidArgument) as wrong_scope:
        vault.consents.grant(POS, customer.customer_id, sms(purpose="identity_verification"))
    assert wrong_scope.value.violations[0].field == "scope"
    vault.consents.grant(POS, customer.customer_id, sms(ConsentScope.SENSITIVE, purpose="identity_verification"))
    assert vault.customers.get(checker, customer.customer_id).profile.national_id == person.national_id
    # The support role never sees identity numbers, whatever the purpose and consent.
    assert "national_id" in vault.customers.get(counter, customer.customer_id).masked_fields
    # Under customer_service the purpose does not list it: masked despite the consent.
    assert "national_id" in vault.customers.get(caller(), customer.customer_id).masked_fields
    vault.consents.withdraw(POS, customer.customer_id, withdrawal("identity_verification"), all_scopes=True)
    assert "national_id" in vault.customers.get(checker, customer.customer_id).masked_fields


def test_purposes_are_bound_to_roles(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    for role, purpose in (("marketing", "customer_service"), ("service", "dsar"), ("analyst", "customer_service")):
        with pytest.raises(PurposeNotAllowed):
            vault.customers.get(caller("x", role, purpose=purpose), customer.customer_id)
    # Even past the RPC gate (which refuses analysts CustomerService outright), analytics shows no field in clear.
    vault.consents.grant(POS, customer.customer_id, sms(purpose="analytics"))
    seen = vault.customers.get(caller("bi", "analyst", purpose="analytics"), customer.customer_id)
    assert set(seen.masked_fields) == set(PERSONAL_FIELDS)  # profile_of sets every field
    for purpose, field in (("", "purpose"), ("spying", "purpose")):
        with pytest.raises(InvalidArgument) as caught:
            vault.customers.get(caller(purpose=purpose), customer.customer_id)
        assert caught.value.violations[0].field == field


def test_a_consent_based_list_shows_only_consenting_customers(vault: Vault, people: People) -> None:
    ids = [vault.customers.create(caller(), "", profile_of(p)).customer_id for p in people.many(7)]
    for customer_id in ids[::2]:
        vault.consents.grant(POS, customer_id, sms())
    vault.consents.withdraw(POS, ids[2], withdrawal(), all_scopes=True)
    expected = sorted({ids[0], ids[4], ids[6]})
    shown: list[str] = []
    token = ""
    while True:
        page = vault.customers.page(MARKETING, 2, token)
        shown += [c.customer_id for c in page.customers]
        assert all(set(c.masked_fields) >= {"email", "address"} for c in page.customers)
        token = page.next_page_token
        if not token:
            break
    assert shown == expected


def test_grant_is_idempotent_on_request_id(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    first = vault.consents.grant(POS, customer.customer_id, sms(), "grant-1")
    assert vault.consents.grant(POS, customer.customer_id, sms(), "grant-1") == first
    with pytest.raises(IdempotencyConflict):
        vault.consents.grant(POS, customer.customer_id, sms(channel=Channel.WEB), "grant-1")
    again = vault.consents.withdraw(POS, customer.customer_id, withdrawal(), "w-1", all_scopes=True)
    assert vault.consents.withdraw(POS, customer.customer_id, withdrawal(), "w-1", all_scopes=True) == again
    assert len(vault.consents.history(dpo(), customer.customer_id, "", 0, "").records) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"notice_sha256": "abc"}, "notice_sha256"),
        ({"notice_version": ""}, "notice_version"),
        ({"evidence_ref": "x\u202ey"}, "evidence_ref"),
        ({"purpose": "order_fulfilment"}, "scope"),
        ({"purpose": "nope"}, "purpose"),
    ],
)
def test_invalid_grants_name_the_field(vault: Vault, people: People, change: dict[str, str], field: str) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    with pytest.raises(InvalidArgument) as caught:
        vault.consents.grant(POS, customer.customer_id, sms(ConsentScope.STANDARD, **change))
    assert caught.value.violations[0].field == field
    assert vault.consents.history(dpo(), customer.customer_id, "", 0, "").records == []


def test_finds_are_rate_limited_per_principal(
    settings: Settings, database: Database, key_provider: KeyProvider, people: People
) -> None:
    limited = Vault.open(dataclasses.replace(settings, lookups_per_minute=3), database=database, provider=key_provider)
    try:
        person = people.next()
        limited.customers.create(caller(), "", profile_of(person))
        for _ in range(3):
            assert limited.customers.find(caller(), IdentifierKind.MOBILE, person.mobile)
        with pytest.raises(ResourceExhausted) as caught:
            limited.customers.find(caller(), IdentifierKind.MOBILE, person.mobile)
        assert caught.value.retry_after_seconds > 0
        other: Caller = caller("crm-1")
        assert limited.customers.find(other, IdentifierKind.MOBILE, person.mobile)
    finally:
        limited.close()


def test_erasure_removes_the_current_state_and_leaves_only_shredded_evidence(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    vault.consents.grant(POS, customer.customer_id, sms())
    vault.shredder.shred(dpo(), customer.customer_id)
    with vault.database.read() as connection:
        state = connection.execute(
            select(ConsentStateRow).where(ConsentStateRow.customer_id == customer.customer_id)
        ).first()
        records = connection.execute(
            select(ConsentRecordRow.evidence_ct).where(ConsentRecordRow.customer_id == customer.customer_id)
        ).all()
    assert state is None
    assert len(records) == 1  # the ledger is append-only; its evidence was sealed with the destroyed key
    with pytest.raises(NotFound):
        vault.consents.history(dpo(), customer.customer_id, "", 0, "")


def test_restricted_customers_consents_are_not_processed_but_can_be_withdrawn(vault: Vault, people: People) -> None:
    from vault.dsar.models import DsarType
    from vault.errors import ProcessingRestricted

    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.consents.grant(POS, customer, sms())
    request = vault.dsar.open(dpo(), None, customer, DsarType.RESTRICTION)
    vault.dsar.verify(dpo(), request.request_id)
    vault.dsar.restrict(dpo(), request.request_id)
    for step in (
        lambda: vault.consents.grant(POS, customer, sms(purpose="marketing_email")),
        lambda: vault.consents.current(MARKETING, customer),
        lambda: vault.consents.history(MARKETING, customer, "", 0, ""),
    ):
        with pytest.raises(ProcessingRestricted):
            step()
    vault.consents.withdraw(POS, customer, withdrawal(), all_scopes=True)  # the customer's right, always
    assert len(vault.consents.history(dpo(), customer, "", 0, "").records) == 2


def test_campaign_roles_do_not_see_evidence_references(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.consents.grant(POS, customer, sms())
    assert vault.consents.history(MARKETING, customer, "", 0, "").records[0].evidence_ref == ""
    assert vault.consents.history(POS, customer, "", 0, "").records[0].evidence_ref == "receipt 0042-7781"
