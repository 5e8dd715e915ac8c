"""Every statement the hot paths run reaches its rows through an index, never a scan of a table that grows.

A scan is invisible in a small test database and fatal in a real one: a purchase import that checked its batch's
order ids against the whole table took time quadratic in the table's size. The statements are captured as the
services really run them (SQLAlchemy's and the driver's alike), and each is explained by SQLite's planner.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from audit.queries import AuditQueries, EventFilter
from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support import canary
from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import IdentifierKind
from vault.imports.reader import read_table
from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService
from vault.purchases.models import PurchaseInput
from vault.storage.db import Database
from vault.storage.migrate import upgrade

ANALYTICS = ConsentRequest(
    "analytics", ConsentScope.STANDARD, Channel.APP, notice_version="a1", notice_sha256="ef" * 32
)

# Tables whose size grows with customers, purchases or accesses; the rest (keys, the audit head, settings) hold a
# handful of rows each.
GROWING = {
    "customers",
    "blind_indexes",
    "idempotency_keys",
    "erasure_ledger",
    "audit_events",
    "audit_subjects",
    "audit_checkpoints",
    "consent_records",
    "consent_state",
    "dsar_requests",
    "pseudonyms",
    "active_pseudonyms",
    "purchases",
    "analytics_tombstones",
}


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Vault, list[str]]]:
    """A vault on a new SQLite file whose every connection reports each statement it runs, its parameters inlined."""
    statements: list[str] = []

    def trace(dbapi_connection: sqlite3.Connection, record: object) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    event.listen(Engine, "connect", trace)
    try:
        settings = Settings(data_dir=tmp_path, lookups_per_minute=0, lookups_per_day=0, find_floor_ms=0)
        database = Database.from_url(settings.effective_database_url)
        upgrade(database.engine)
        vault = Vault.open(settings, database=database)
        statements.clear()  # opening replays the erasure ledger over every customer, once per start, by design
        try:
            yield vault, statements
        finally:
            vault.close()
            database.dispose()
    finally:
        event.remove(Engine, "connect", trace)


def _workload(vault: Vault, people: People, tmp_path: Path) -> None:
    """What integrating systems, imports, the analytics feed and auditors do every day, once each."""
    service = caller("pos", "service", "/piivault.v1.CustomerService/GetCustomer")
    created = [vault.customers.create(service, f"r-{n}", profile_of(people.next())) for n in range(5)]
    crowd = [people.next() for _ in range(30)]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    canary.allow(inputs, "the import files the workload gives the importer")
    customers_csv = inputs / "customers.csv"
    with customers_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("name", "mobile", "email", "member_id", "external_id"))
        for n, person in enumerate(crowd):
            writer.writerow((person.name, person.mobile, person.email, person.member_id, f"E-{n}"))
            writer.writerow(("", f"+86 {person.mobile}", "", "", f"E-{n}"))  # the same person again: a match
    purchases_csv = inputs / "purchases.csv"
    with purchases_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("member_id", "order_id", "purchase_time", "amount", "sku", "quantity"))
        for n in range(120):
            writer.writerow((crowd[n % len(crowd)].member_id, f"O-{n}", "2026-03-01 10:00:00", "25.90", "SKU-1", 1))
    importer = ImportService(vault.customers, vault.purchases)
    for _ in range(2):  # the second time every row is a known customer and an already recorded order
        importer.customers(service, "crm", read_table(customers_csv, {}, CUSTOMER_FIELDS).rows)
        importer.purchases(service, "pos", read_table(purchases_csv, {}, PURCHASE_FIELDS).rows)
    first = created[0]
    vault.purchases.record(
        service,
        first.customer_id,
        PurchaseInput(
            source="pos",
            order_id="R-1",
            purchase_time=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
            amount_minor=0,
            currency="CNY",
            return_of_order_id="O-1",
        ),
    )
    vault.customers.get(service, first.customer_id)
    profile = first.profile
    vault.customers.find(service, IdentifierKind.MOBILE, profile.mobile)
    vault.customers.find(service, IdentifierKind.EMAIL, profile.email)
    vault.customers.find(service, IdentifierKind.MEMBER_ID, profile.member_id)
    vault.customers.find(service, IdentifierKind.EXTERNAL_REF, "E-3", "crm")
    vault.customers.update(service, replace(profile, name="改名"), first.customer_id, ["name"], first.version)
    vault.customers.page(service, 10, "")
    vault.consents.grant(service, first.customer_id, ANALYTICS)
    vault.consents.current(service, first.customer_id)
    list(vault.analytics.pages(caller("bi", "analyst", "/piivault.v1.AnalyticsService/ExportPurchases"), "", 100))
    queries = AuditQueries(vault.database)
    for where in (
        EventFilter(customer_id=first.customer_id),
        EventFilter(principal="pos"),
        EventFilter(action="/piivault.v1.CustomerService/GetCustomer"),
        EventFilter(outcome="denied"),
        EventFilter(start_us=1, end_us=2**62),
    ):
        list(queries.events(where))


def test_no_statement_scans_a_growing_table(traced: tuple[Vault, list[str]], people: People, tmp_path: Path) -> None:
    vault, statements = traced
    _workload(vault, people, tmp_path)
    lookups = sorted({s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))})
    assert len(lookups) > 20  # the capture saw the services' statements, driver paths included
    with closing(sqlite3.connect(str(vault.database.engine.url.database))) as connection:
        scans = {
            sql: scanned
            for sql in lookups
            if (scanned := _scanned(sql, [str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]))
        }
    assert scans == {}


def _scanned(sql: str, plan: list[str]) -> set[str]:
    """Growing tables the plan reads in full: ``SCAN t``. ``SEARCH t USING ...`` is an index or rowid lookup, and
    ``SCAN t USING INDEX`` under a LIMIT is a walk in index order that stops after a page (a paginated list)."""
    paged = re.search(r"\bLIMIT\b", sql) is not None
    scanned = set()
    for step in plan:
        match = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX)?", step)
        if match and match.group(1) in GROWING and not (paged and match.group(2)):
            scanned.add(match.group(1))
    return scanned
