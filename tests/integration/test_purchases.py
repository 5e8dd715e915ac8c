"""Purchases under pseudonyms, the analytics feed with tombstones, and the DSAR export and erasure of purchases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import zipfile

import pytest
from sqlalchemy import func, select

from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.dsar.models import DsarType
from vault.errors import IdempotencyConflict, InvalidArgument, NotFound, ProcessingRestricted
from vault.keys.provider import KeyProvider
from vault.purchases.analytics import FeedPage
from vault.purchases.models import Line, PurchaseInput
from vault.storage.db import Database
from vault.storage.models import PseudonymRow, PurchaseRow

POS = caller("pos-shanghai-01", "service", "/piivault.v1.PurchaseService/RecordPurchase")
ANALYST = caller("bi", "analyst", "/piivault.v1.AnalyticsService/ExportPurchases")
T0 = dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
ANALYTICS = ConsentRequest(
    "analytics", ConsentScope.STANDARD, Channel.APP, notice_version="a1", notice_sha256="ef" * 32
)


def order(order_id: str, amount: int = 2590, **extra: object) -> PurchaseInput:
    fields: dict[str, object] = {
        "source": "POS",
        "order_id": order_id,
        "purchase_time": T0,
        "amount_minor": amount,
        "currency": "CNY",
        "store_id": "SH-001",
        "lines": (Line("SKU-1", 1, amount),),
        "payment_method": "wechat_pay",
    }
    fields.update(extra)
    return PurchaseInput(**fields)  # type: ignore[arg-type]


def export(vault: Vault, cursor: str = "") -> FeedPage:
    pages = list(vault.analytics.pages(ANALYST, cursor, 1000))
    return FeedPage(
        [p for page in pages for p in page.purchases], [t for page in pages for t in page.tombstones], pages[-1].cursor
    )


def test_recording_is_validated_and_idempotent(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next()))
    first = vault.purchases.record(POS, customer.customer_id, order("A-1"))
    again = vault.purchases.record(POS, customer.customer_id, order("A-1"))
    assert again.duplicate and again.purchase_id == first.purchase_id and not first.duplicate
    with pytest.raises(IdempotencyConflict):
        vault.purchases.record(POS, customer.customer_id, order("A-1", amount=100, lines=(Line("SKU-1", 1, 100),)))
    with pytest.raises(InvalidArgument) as caught:
        vault.purchases.record(POS, customer.customer_id, order("A-2", currency="rmb", source="", amount=-5))
    assert {v.field for v in caught.value.violations} == {
        "purchase.currency",
        "purchase.source",
        "purchase.amount_minor",
        "purchase.lines[0].unit_price_minor",
    }
    with pytest.raises(InvalidArgument) as mismatch:
        vault.purchases.record(POS, customer.customer_id, order("A-2", amount=5, lines=(Line("S", 2, 3),)))
    assert [v.field for v in mismatch.value.violations] == ["purchase.amount_minor"]
    with pytest.raises(InvalidArgument) as no_original:
        vault.purchases.record(POS, customer.customer_id, order("R-1", return_of_order_id="A-404"))
    assert no_original.value.violations[0].field == "purchase.return_of_order_id"
    vault.purchases.record(POS, customer.customer_id, order("R-2", return_of_order_id="A-1"))
    with pytest.raises(NotFound):
        vault.purchases.record(POS, "00000000-0000-4000-8000-000000000000", order("A-3"))
    with vault.database.read() as connection:
        assert connection.execute(select(func.count()).select_from(PurchaseRow)).scalar_one() == 2
        stored = connection.execute(select(PurchaseRow.pseudonym)).scalars().all()
    # Filed under one random pseudonym, never the customer id.
    assert len(set(stored)) == 1 and len(stored[0]) == 32 and customer.customer_id not in stored


def test_a_batch_records_good_rows_and_reports_bad_ones(vault: Vault, people: People) -> None:
    a, b = (vault.customers.create(caller(), "", profile_of(p)).customer_id for p in people.many(2))
    items = [(a, order(f"B-{n}")) for n in range(1200)] + [(b, order("B-0"))]  # the last one clashes with a's B-0
    items.insert(7, (a, order("bad", currency="")))
    summary = vault.purchases.record_many(POS, items)
    assert (summary.recorded, summary.duplicates) == (1200, 0)
    assert [(index, field) for index, field, _ in summary.rejections or []] == [
        (7, "purchase.currency"),
        (1201, "purchase.order_id"),
    ]
    again = vault.purchases.record_many(POS, [(a, order(f"B-{n}")) for n in range(1200)])
    assert (again.recorded, again.duplicates, again.rejected) == (0, 1200, 0)


def test_the_feed_needs_consent_and_tombstones_withdrawals_and_erasures(vault: Vault, people: People) -> None:
    staying, leaving, erased, never = (
        vault.customers.create(caller(), "", profile_of(p)).customer_id for p in people.many(4)
    )
    for customer_id in (staying, leaving, erased):
        vault.consents.grant(caller(), customer_id, ANALYTICS)
    for n, customer_id in enumerate((staying, leaving, erased, never)):
        vault.purchases.record(POS, customer_id, order(f"F-{n}", amount=1000 * (n + 1)))
    first = export(vault)
    by_pseudonym = {p.pseudonym: p for p in first.purchases}
    assert sorted(p.amount_minor for p in first.purchases) == [1000, 2000, 3000]  # `never` never consented
    assert first.tombstones == []
    leaving_pseudonym = next(p for p, row in by_pseudonym.items() if row.amount_minor == 2000)
    erased_pseudonym = next(p for p, row in by_pseudonym.items() if row.amount_minor == 3000)

    vault.consents.withdraw(
        caller(), leaving, ConsentRequest("analytics", ConsentScope.STANDARD, Channel.APP), all_scopes=True
    )
    vault.shredder.shred(dpo(), erased)
    vault.purchases.record(POS, leaving, order("F-10", amount=7))  # filed under a new pseudonym, not exported
    vault.purchases.record(POS, staying, order("F-11", amount=9))
    second = export(vault, first.cursor)
    assert {(t.pseudonym, t.reason) for t in second.tombstones} == {
        (leaving_pseudonym, "consent_withdrawn"),
        (erased_pseudonym, "erased"),
    }
    assert [p.amount_minor for p in second.purchases] == [9]
    assert export(vault, second.cursor).purchases == [] and export(vault, second.cursor).tombstones == []
    everything = export(vault)  # a consumer starting from scratch sees no row of the gone pseudonyms either
    assert {leaving_pseudonym, erased_pseudonym}.isdisjoint(p.pseudonym for p in everything.purchases)
    with vault.database.read() as connection:
        assert connection.execute(select(PseudonymRow).where(PseudonymRow.customer_id == erased)).first() is None
        assert connection.execute(select(PurchaseRow).where(PurchaseRow.pseudonym == erased_pseudonym)).first() is None


def test_returns_are_negative_in_the_feed(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.consents.grant(caller(), customer, ANALYTICS)
    vault.purchases.record(POS, customer, order("S-1", amount=500, lines=(Line("X", 2, 250),)))
    vault.purchases.record(
        POS, customer, order("S-1R", amount=250, lines=(Line("X", 1, 250),), return_of_order_id="S-1")
    )
    rows = export(vault).purchases
    assert [(p.amount_minor, p.items, p.is_return) for p in rows] == [(500, 2, False), (-250, -1, True)]


def test_restricted_customers_record_nothing(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    request = vault.dsar.open(dpo(), None, customer, DsarType.RESTRICTION)
    vault.dsar.verify(dpo(), request.request_id)
    vault.dsar.restrict(dpo(), request.request_id)
    with pytest.raises(ProcessingRestricted):
        vault.purchases.record(POS, customer, order("X-1"))


def test_the_dsar_export_carries_every_purchase(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.consents.grant(caller(), customer, ANALYTICS)
    vault.purchases.record(POS, customer, order("D-1"))
    vault.consents.withdraw(
        caller(), customer, ConsentRequest("analytics", ConsentScope.STANDARD, Channel.APP), all_scopes=True
    )
    vault.purchases.record(POS, customer, order("D-2"))  # under the next pseudonym
    request = vault.dsar.open(dpo(), None, customer, DsarType.ACCESS)
    vault.dsar.verify(dpo(), request.request_id)
    archive = zipfile.ZipFile(io.BytesIO(vault.dsar.export(dpo(), request.request_id)))
    purchases = json.loads(archive.read("purchases.json"))
    assert [(p["order_id"], p["amount"], p["lines"][0]["sku"]) for p in purchases] == [
        ("D-1", "25.90", "SKU-1"),
        ("D-2", "25.90", "SKU-1"),
    ]
    assert "pseudonym" not in json.dumps(purchases)  # the customer gets their purchases, not the vault's internals


def test_anonymise_keeps_purchases_but_nothing_that_links_them(
    settings: Settings, database: Database, key_provider: KeyProvider, people: People
) -> None:
    vault = Vault.open(
        dataclasses.replace(settings, erasure_purchases="anonymise"), database=database, provider=key_provider
    )
    try:
        customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
        vault.purchases.record(POS, customer, order("N-1", coupon="VIP-77"))
        vault.shredder.shred(dpo(), customer)
        with vault.database.read() as connection:
            kept = connection.execute(select(PurchaseRow.pseudonym, PurchaseRow.order_id, PurchaseRow.coupon)).one()
        assert kept.pseudonym == "" and kept.order_id.startswith("anon:") and kept.coupon == ""
        assert "N-1" not in kept.order_id
    finally:
        vault.close()


def test_the_feed_carries_a_keyed_order_reference_not_the_order_id(vault: Vault, people: People) -> None:
    customer = vault.customers.create(caller(), "", profile_of(people.next())).customer_id
    vault.consents.grant(caller(), customer, ANALYTICS)
    vault.purchases.record(POS, customer, order("POS-2026-000123"))
    (row,) = export(vault).purchases
    assert len(row.order_ref) == 32 and "000123" not in row.order_ref
