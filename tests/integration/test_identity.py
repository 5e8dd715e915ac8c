"""MergeCustomers and SplitCustomer: one person's two records become one; one record of two people becomes two."""

from __future__ import annotations

import datetime as dt

import pytest

from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.customers.models import IdentifierKind, Profile
from vault.errors import InvalidArgument, NotFound
from vault.purchases.models import PurchaseInput

ANALYTICS = ConsentRequest("analytics", ConsentScope.STANDARD, Channel.POS, notice_version="a", notice_sha256="ab" * 32)
WHEN = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def test_merge_moves_identifiers_and_purchases_then_erases_the_duplicate(vault: Vault, people: People) -> None:
    a, b = people.next(), people.next()
    survivor = vault.customers.create(caller(), "", Profile(name=a.name, mobile=a.mobile)).customer_id
    duplicate = vault.customers.create(
        caller(), "", Profile(name="张某", mobile=b.mobile, email=a.email, member_id=a.member_id)
    ).customer_id
    vault.consents.grant(caller(), duplicate, ANALYTICS)
    vault.purchases.record(caller(), duplicate, PurchaseInput("pos", "M-1", WHEN, 990, "CNY"))
    result = vault.identity.merge(caller("support-1", "support"), survivor, duplicate)
    assert result.filled == ("email", "member_id") and result.conflicts == ("name", "mobile")
    merged = vault.customers.get(dpo(), survivor)
    assert (merged.profile.name, merged.profile.mobile) == (a.name, "+86" + a.mobile)  # the survivor's values stay
    assert (merged.profile.email, merged.profile.member_id) == (a.email, a.member_id)
    assert vault.customers.find(caller(), IdentifierKind.EMAIL, a.email)[0].customer_id == survivor
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, b.mobile) == []  # the conflicting phone went
    with pytest.raises(NotFound):
        vault.customers.get(dpo(), duplicate)
    assert vault.shredder.subject(duplicate) in vault.shredder._ledger.subjects()
    feed = list(vault.analytics.pages(caller("bi", "analyst"), "", 100))
    assert [t.reason for page in feed for t in page.tombstones] == ["merged"]
    assert [p["order_id"] for p in vault.purchases.of_customer(survivor)] == ["M-1"]  # the purchases followed
    with pytest.raises(InvalidArgument):
        vault.identity.merge(caller(), survivor, survivor)
    assert vault.audit_verifier.verify().intact


def test_split_moves_fields_to_a_new_customer(vault: Vault, people: People) -> None:
    a, b = people.next(), people.next()
    mixed = vault.customers.create(
        caller(), "", profile_of(a, email=b.email, member_id=b.member_id, external_refs=())
    ).customer_id
    other = vault.identity.split(caller(), mixed, ["email", "member_id"])
    assert vault.customers.find(caller(), IdentifierKind.EMAIL, b.email)[0].customer_id == other.customer_id
    assert vault.customers.find(caller(), IdentifierKind.MEMBER_ID, b.member_id)[0].customer_id == other.customer_id
    kept = vault.customers.get(dpo(), mixed)
    assert kept.profile.email == "" and kept.profile.member_id == "" and kept.profile.mobile == "+86" + a.mobile
    new = vault.customers.get(dpo(), other.customer_id)
    assert (new.profile.email, new.profile.member_id, new.profile.name) == (b.email, b.member_id, "")
    with pytest.raises(InvalidArgument):  # the new record would have no identifier
        vault.identity.split(caller(), mixed, ["name"])
