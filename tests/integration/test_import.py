"""Channel imports: one person in several rows with differently written phones becomes one customer; bad rows are
rejected with reasons; re-importing changes nothing; CSV in UTF-8, UTF-8 with BOM, GB18030, and XLSX all read."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from audit.queries import AuditQueries, EventFilter
from tests.support.people import People, caller, dpo
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import IdentifierKind, Profile
from vault.imports.reader import read_table
from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService, canonical_row
from vault.keys.provider import KeyProvider
from vault.storage.db import Database

HEADERS = ["姓名", "手机号码", "邮箱", "会员卡号", "生日", "性别", "外部编号"]


def numbered(table: list[Profile]) -> list[tuple[int, Callable[[], Profile]]]:
    """Import rows as ``ImportService.profiles`` takes them, numbered as in a file with a header line."""
    return [(n, partial(canonical_row, profile, "", "crm")) for n, profile in enumerate(table, start=2)]


def rows(people: People) -> list[list[str]]:
    a, b = people.next(), people.next()
    m = a.mobile
    return [
        [a.name, m, "", "", "1990/5/17", "女", "P-1"],
        [a.name, f"+86 {m[:3]}-{m[3:7]}-{m[7:]}", a.email, "", "", "", "P-1"],  # the same person, phone rewritten
        ["", "".join(chr(ord(d) + 0xFEE0) for d in m), "", a.member_id, "", "", "P-2"],  # fullwidth digits
        ["另一个名字", f"0086 {m}", "", "", "", "", ""],  # the same phone, another name: a conflict, kept as stored
        ["坏号码", "12345", "", "", "", "", ""],  # invalid mobile
        ["无联系方式", "", "", "", "", "男", ""],  # no identifier at all
        [b.name, b.mobile, b.email, b.member_id, "", "男", "P-3"],
    ]


def write(path: Path, table: list[list[str]], encoding: str) -> None:
    if path.suffix == ".xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        for row in [HEADERS, *table]:
            sheet.append(row)
        book.save(path)
        return
    buffer = io.StringIO()
    csv.writer(buffer).writerows([HEADERS, *table])
    path.write_bytes(buffer.getvalue().encode(encoding))


@pytest.mark.parametrize(
    ("name", "encoding"), [("a.csv", "utf-8"), ("b.csv", "utf-8-sig"), ("c.csv", "gb18030"), ("d.xlsx", "")]
)
def test_one_person_in_many_rows_becomes_one_customer(
    vault: Vault, people: People, tmp_path: Path, name: str, encoding: str
) -> None:
    table = rows(people)
    path = tmp_path / name
    write(path, table, encoding)
    importer = ImportService(vault.customers, vault.purchases)
    who = caller("pos-import", "service", "cli:import customers")

    first = importer.customers(who, "pos", read_table(path, {}, CUSTOMER_FIELDS).rows)
    outcomes = [(r.row, r.outcome, r.reason, r.field) for r in first.results]
    assert outcomes == [
        (2, "created", "", ""),
        (3, "merged", "", ""),
        (4, "merged", "", ""),
        (5, "unchanged", "", ""),
        (6, "rejected", "invalid", "mobile"),
        (7, "rejected", "invalid", "customer"),
        (8, "created", "", ""),
    ]
    person = first.results[0].customer_id
    assert {r.customer_id for r in first.results[:4]} == {person}
    assert first.results[1].filled == ("email",) and first.results[2].filled == ("member_id", "external_refs")
    assert first.results[3].conflicts == ("name",)
    stored = vault.customers.get(dpo(), person)
    assert stored.profile.name == table[0][0]  # the conflicting name was reported, not written
    assert stored.profile.birth_date == "1990-05-17" and stored.profile.member_id == table[2][3]
    assert [(ref.source, ref.id) for ref in stored.profile.external_refs] == [("pos", "P-1"), ("pos", "P-2")]
    assert vault.customers.find(caller(), IdentifierKind.EXTERNAL_REF, "P-2", ref_source="pos")[0].customer_id == person

    again = importer.customers(who, "pos", read_table(path, {}, CUSTOMER_FIELDS).rows)
    assert [r.outcome for r in again.results] == ["unchanged"] * 4 + ["rejected", "rejected", "unchanged"]
    assert vault.customers.get(dpo(), person).version == stored.version  # nothing changed the second time
    assert len(vault.customers.page(dpo(), 500, "").customers) == 2


def test_purchases_import_names_customers_by_identifier(vault: Vault, people: People, tmp_path: Path) -> None:
    person = people.next()
    importer = ImportService(vault.customers, vault.purchases)
    who = caller("pos-import", "service")
    customers = tmp_path / "customers.csv"
    customers.write_text(f"手机号码,会员卡号\n{person.mobile},{person.member_id}\n", encoding="utf-8")
    importer.customers(who, "pos", read_table(customers, {}, CUSTOMER_FIELDS).rows)
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "会员卡号,订单号,下单时间,金额,sku,数量\n"
        f"{person.member_id},O-1,2026-03-01 10:30:00,128.50,SKU-9,1\n"
        f"{person.member_id},O-2,2026/03/02 11:00:00,40.00,SKU-7,4\n"
        f"M-NOBODY,O-3,2026-03-03 09:00:00,10.00,,\n"
        f"{person.member_id},O-4,yesterday,10.00,,\n",
        encoding="gb18030",
    )
    summary = importer.purchases(who, "pos", read_table(orders, {}, PURCHASE_FIELDS).rows)
    assert sorted((r.row, r.outcome, r.reason, r.field) for r in summary.results) == [
        (2, "recorded", "", ""),
        (3, "recorded", "", ""),
        (4, "rejected", "not_found", "customer"),
        (5, "rejected", "invalid", "purchase_time"),
    ]
    again = importer.purchases(who, "pos", read_table(orders, {}, PURCHASE_FIELDS).rows)
    assert again.counts["duplicates"] == 2


def test_the_import_command_reports_without_personal_data(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.support.scan import find_in_bytes, needles

    piivault = str(Path(sys.executable).parent / "piivault")
    env = {**os.environ, "PIIVAULT_DATA_DIR": str(tmp_path / "var")}
    subprocess.run([piivault, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    people = People(seed=19)
    table = rows(people)
    path = tmp_path / "members.csv"
    write(path, table, "gb18030")
    report = tmp_path / "report.csv"
    done = subprocess.run(
        [piivault, "import", "customers", str(path), "--source", "POS", "--report", str(report)],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == {"created": 2, "merged": 2, "rejected": 2, "unchanged": 1, "conflicts": 1}
    written = report.read_bytes() + done.stdout + done.stderr
    assert find_in_bytes(written, needles(People(seed=19).many(2))) == []
    assert b"invalid" in report.read_bytes()


def test_matching_over_the_api_is_metered_audited_and_refused_for_restricted_customers(
    settings: Settings, database: Database, key_provider: KeyProvider, people: People
) -> None:
    import dataclasses

    from vault.dsar.models import DsarType
    from vault.errors import ResourceExhausted

    vault = Vault.open(dataclasses.replace(settings, lookups_per_minute=3), database=database, provider=key_provider)
    try:
        a, b = people.next(), people.next()
        kept = vault.customers.create(caller(), "", Profile(mobile=a.mobile)).customer_id
        held = vault.customers.create(caller(), "", Profile(mobile=b.mobile)).customer_id
        request = vault.dsar.open(dpo(), None, held, DsarType.RESTRICTION)
        vault.dsar.verify(dpo(), request.request_id)
        vault.dsar.restrict(dpo(), request.request_id)
        who = caller("crm-sync", "service", "/piivault.v1.CustomerService/ImportCustomers")
        rows = [
            (2, partial(canonical_row, Profile(mobile=a.mobile), "", "crm")),
            (3, partial(canonical_row, Profile(mobile=b.mobile), "", "crm")),
        ]
        importer = ImportService(vault.customers, vault.purchases)
        results = importer.profiles(who, rows, metered=True).results
        assert [(r.outcome, r.reason) for r in results] == [("unchanged", ""), ("rejected", "restricted")]
        audited = [e for chunk in AuditQueries(vault.database).events(EventFilter(customer_id=kept)) for e in chunk]
        assert audited[-1].principal == "crm-sync"  # learning which customer holds a phone is an audited access
        with pytest.raises(ResourceExhausted):
            importer.profiles(who, rows, metered=True)  # the third and fourth lookups of a budget of three
    finally:
        vault.close()


def test_rows_of_a_person_still_waiting_to_be_created_merge_in_memory_and_are_each_audited(
    vault: Vault, people: People
) -> None:
    a, b, stored = people.next(), people.next(), people.next()
    taken = vault.customers.create(caller(), "", Profile(email=stored.email)).customer_id
    table = [
        Profile(mobile=a.mobile),
        Profile(mobile=a.mobile, email=a.email),  # fills the waiting customer's email
        Profile(email=a.email, member_id=a.member_id),  # found through the email the row before filled
        Profile(mobile=a.mobile, name="另一个名字"),  # fills the name
        Profile(mobile=a.mobile, name=a.name),  # differs from the name filled a row earlier: a conflict
        Profile(mobile=b.mobile),
        Profile(mobile=b.mobile, member_id=a.member_id),  # one waiting customer's phone, another's member id
        Profile(mobile=b.mobile, email=stored.email),  # a waiting customer's phone, a stored customer's email
    ]
    rows = numbered(table)
    who = caller("crm-sync", "service", "cli:import customers")
    results = ImportService(vault.customers, vault.purchases).profiles(who, rows).results
    assert [(r.outcome, r.reason, r.filled, r.conflicts) for r in results] == [
        ("created", "", (), ()),
        ("merged", "", ("email",), ()),
        ("merged", "", ("member_id",), ()),
        ("merged", "", ("name",), ()),
        ("unchanged", "", (), ("name",)),
        ("created", "", (), ()),
        ("rejected", "ambiguous", (), ()),
        ("rejected", "ambiguous", (), ()),
    ]
    person = results[0].customer_id
    assert {r.customer_id for r in results[:5]} == {person} and results[5].customer_id not in {person, taken}
    stored_a = vault.customers.get(dpo(), person)
    assert (stored_a.profile.email, stored_a.profile.member_id, stored_a.profile.name) == (
        a.email,
        a.member_id,
        "另一个名字",
    )
    assert stored_a.version == 1  # created once, already merged
    events = [e for chunk in AuditQueries(vault.database).events(EventFilter(customer_id=person)) for e in chunk]
    mine = [e for e in events if e.principal == "crm-sync"]
    # One event for the creation (every field it stored) and one per row matched to it (the fields that row filled).
    assert [tuple(e.fields) for e in mine] == [
        ("name", "mobile", "email", "member_id"),
        ("email",),
        ("member_id",),
        ("name",),
        (),
    ]


def test_a_batch_whose_identifier_was_taken_meanwhile_settles_every_row_alone(vault: Vault, people: People) -> None:
    a, b = people.next(), people.next()
    table = [Profile(mobile=a.mobile), Profile(mobile=a.mobile, email=a.email), Profile(mobile=b.mobile)]
    rows = numbered(table)
    importer = ImportService(vault.customers, vault.purchases)
    # Another writer stores b's phone after the import looked its rows up and before it creates them.
    looked_up = vault.customers.owners_of_many

    raced: list[str] = []

    def racing(profiles: list[Profile], known: dict[tuple[IdentifierKind, str], bytes] | None = None) -> list[set[str]]:
        owners = looked_up(profiles, known)
        if not raced:  # right after the chunk's lookup
            raced.append(vault.customers.create(caller(), "", Profile(mobile=b.mobile)).customer_id)
        return owners

    vault.customers.owners_of_many = racing  # type: ignore[method-assign,assignment]
    results = importer.profiles(caller("crm-sync"), rows).results
    assert [(r.outcome, r.filled) for r in results] == [("created", ()), ("merged", ("email",)), ("unchanged", ())]
    assert results[0].customer_id == results[1].customer_id != results[2].customer_id == raced[0]
    assert vault.customers.get(dpo(), results[0].customer_id).profile.email == a.email


def test_a_row_naming_a_waiting_customer_and_one_stored_earlier_in_the_same_chunk_is_ambiguous(
    vault: Vault, people: People
) -> None:
    a, c, spare = people.next(), people.next(), people.next()
    stored = vault.customers.create(caller(), "", Profile(mobile=c.mobile)).customer_id
    table = [
        Profile(mobile=a.mobile, email=a.email),  # new: waits to be created
        Profile(mobile=c.mobile, email=spare.email),  # the stored customer: its email is filled now
        Profile(mobile=a.mobile, email=spare.email),  # the waiting customer's phone, the stored one's new email
    ]
    rows = numbered(table)
    results = ImportService(vault.customers, vault.purchases).profiles(caller("crm-sync"), rows).results
    assert [(r.outcome, r.reason) for r in results] == [("created", ""), ("merged", ""), ("rejected", "ambiguous")]
    assert results[1].customer_id == stored
    assert vault.customers.get(dpo(), results[0].customer_id).profile.email == a.email
