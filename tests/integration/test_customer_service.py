"""CustomerService against a real database (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.people import People, caller, dpo, profile_of
from tests.support.scan import find_in_bytes, needles, pg_dump, sqlite_files, table_dump
from vault.app import Vault
from vault.customers.models import IdentifierKind, Profile
from vault.errors import (
    AlreadyExists,
    IdempotencyConflict,
    IntegrityError,
    InvalidArgument,
    NotFound,
    VersionConflict,
)
from vault.storage.models import CustomerRow


def test_create_then_get_returns_the_same_canonical_customer(vault: Vault, people: People) -> None:
    person = people.next()
    created = vault.customers.create(caller("pos"), "r-1", profile_of(person))
    read = vault.customers.get(dpo(), created.customer_id)
    assert read == created
    assert read.profile.mobile == "+86" + person.mobile
    assert read.profile.attributes["preferred_store"] == "上海静安店"
    assert read.version == 1


def test_request_id_replays_and_conflicts(vault: Vault, people: People) -> None:
    person = people.next()
    first = vault.customers.create(caller("pos"), "r-1", profile_of(person))
    assert vault.customers.create(caller("pos"), "r-1", profile_of(person)) == first
    written_differently = profile_of(person, mobile="+86 " + person.mobile[:3] + "-" + person.mobile[3:])
    assert vault.customers.create(caller("pos"), "r-1", written_differently) == first  # same canonical body
    with pytest.raises(IdempotencyConflict):
        vault.customers.create(caller("pos"), "r-1", profile_of(person, name="别人"))
    # request ids are per principal: another system's r-1 is a different request (and hits the duplicate mobile)
    with pytest.raises(AlreadyExists):
        vault.customers.create(caller("web"), "r-1", profile_of(person))


def test_duplicate_identifier_names_the_owner(vault: Vault, people: People) -> None:
    person, other = people.next(), people.next()
    owner = vault.customers.create(caller("pos"), "", profile_of(person))
    clash = Profile(name=other.name, email=other.email, national_id=person.national_id)
    with pytest.raises(AlreadyExists) as caught:
        vault.customers.create(caller("pos"), "", clash)
    assert caught.value.customer_id == owner.customer_id
    assert caught.value.field == "customer.national_id"
    assert len(vault.customers.page(caller(), 500, "").customers) == 1  # nothing half written


@pytest.mark.parametrize(
    ("kind", "written"),
    [
        (IdentifierKind.MOBILE, "0086 {mobile}"),
        (IdentifierKind.MOBILE, "+86 {m3}-{m4}-{m4b}"),
        (IdentifierKind.EMAIL, "  {email_upper}"),
        (IdentifierKind.NATIONAL_ID, "{national_id}"),
        (IdentifierKind.MEMBER_ID, "{member_id}"),
    ],
)
def test_find_by_any_written_form(vault: Vault, people: People, kind: IdentifierKind, written: str) -> None:
    person = people.next()
    created = vault.customers.create(caller("pos"), "", profile_of(person))
    value = written.format(
        mobile=person.mobile,
        m3=person.mobile[:3],
        m4=person.mobile[3:7],
        m4b=person.mobile[7:],
        email_upper=person.email.upper(),
        national_id=person.national_id,
        member_id=person.member_id,
    )
    assert [c.customer_id for c in vault.customers.find(caller(), kind, value)] == [created.customer_id]


def test_find_by_external_ref_and_misses(vault: Vault, people: People) -> None:
    person = people.next()
    created = vault.customers.create(caller("pos"), "", profile_of(person))
    found = vault.customers.find(caller(), IdentifierKind.EXTERNAL_REF, f"P-{person.member_id}", ref_source="POS")
    assert [c.customer_id for c in found] == [created.customer_id]
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, "13912345678") == []
    with pytest.raises(InvalidArgument) as caught:
        vault.customers.find(caller(), IdentifierKind.NATIONAL_ID, person.national_id[:17] + "0")
    assert caught.value.violations[0].field == "national_id"


def test_update_with_mask_and_expected_version(vault: Vault, people: People) -> None:
    person, new = people.next(), people.next()
    created = vault.customers.create(caller("pos"), "", profile_of(person))
    patch = Profile(mobile=new.mobile, address="")
    updated = vault.customers.update(caller(), patch, created.customer_id, ["mobile", "address"], expected_version=1)
    assert updated.version == 2
    assert updated.profile.mobile == "+86" + new.mobile
    assert updated.profile.address == ""
    # Outside the mask: untouched, and returned masked (the writer learns only what it wrote).
    assert updated.profile.name != person.name and updated.profile.name[0] == person.name[0]
    assert set(updated.masked_fields) == {
        "name",
        "email",
        "national_id",
        "birth_date",
        "gender",
        "member_id",
        "attributes",
        "external_refs",
    }
    read = vault.customers.get(dpo(), created.customer_id)
    assert read.profile.name == person.name and read.profile.mobile == updated.profile.mobile
    assert read.version == updated.version and read.update_time == updated.update_time
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, person.mobile) == []  # old mobile released
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, new.mobile)[0].customer_id == created.customer_id
    with pytest.raises(VersionConflict):
        vault.customers.update(caller(), patch, created.customer_id, ["name"], expected_version=1)


def test_update_rejects_bad_masks_taken_identifiers_and_unknown_ids(vault: Vault, people: People) -> None:
    first, second = people.next(), people.next()
    a = vault.customers.create(caller("pos"), "", profile_of(first))
    b = vault.customers.create(caller("pos"), "", profile_of(second))
    for mask in ([], ["customer_id"], ["*"]):
        with pytest.raises(InvalidArgument) as caught:
            vault.customers.update(caller(), Profile(), a.customer_id, mask, 1)
        assert caught.value.violations[0].field == "update_mask"
    with pytest.raises(AlreadyExists) as taken:
        vault.customers.update(caller(), Profile(email=second.email), a.customer_id, ["email"], 1)
    assert taken.value.customer_id == b.customer_id
    assert vault.customers.get(caller(), a.customer_id).version == 1  # nothing half written
    with pytest.raises(InvalidArgument):  # removing every identifier would make the customer unfindable
        vault.customers.update(
            caller(), Profile(), a.customer_id, ["mobile", "email", "national_id", "member_id", "external_refs"], 1
        )
    with pytest.raises(NotFound):
        vault.customers.update(caller(), Profile(name="x"), "00000000-0000-4000-8000-000000000000", ["name"], 1)


def test_list_paginates_every_customer_once(vault: Vault, people: People) -> None:
    created = {vault.customers.create(caller("pos"), "", profile_of(people.next())).customer_id for _ in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = vault.customers.page(caller(), 3, token)
        seen.extend(c.customer_id for c in page.customers)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(created)
    with pytest.raises(InvalidArgument) as caught:
        vault.customers.page(caller(), 3, "forged-token")
    assert caught.value.violations[0].field == "page_token"


def _swap(vault: Vault, target_id: str, column: str, ciphertext: bytes) -> None:
    with vault.database.write() as connection:
        connection.execute(update(CustomerRow).where(CustomerRow.customer_id == target_id).values({column: ciphertext}))


def _ciphertext(vault: Vault, customer_id: str, column: str) -> bytes:
    with vault.database.read() as connection:
        value = connection.execute(
            select(getattr(CustomerRow, column)).where(CustomerRow.customer_id == customer_id)
        ).scalar_one()
    return bytes(value)


def test_ciphertext_copied_to_another_row_fails_integrity(vault: Vault, people: People) -> None:
    a = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    b = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    _swap(vault, b.customer_id, "name_ct", _ciphertext(vault, a.customer_id, "name_ct"))
    with pytest.raises(IntegrityError) as caught:
        vault.customers.get(caller(), b.customer_id)
    assert a.profile.name not in str(caught.value)
    assert vault.customers.get(dpo(), a.customer_id) == a


def test_ciphertext_copied_to_another_field_fails_integrity(vault: Vault, people: People) -> None:
    a = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    _swap(vault, a.customer_id, "address_ct", _ciphertext(vault, a.customer_id, "name_ct"))
    with pytest.raises(IntegrityError):
        vault.customers.get(caller(), a.customer_id)


def test_whole_row_copied_under_another_id_fails_integrity(vault: Vault, people: People) -> None:
    a = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    b = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    with vault.database.read() as connection:
        source = connection.execute(select(CustomerRow.__table__).where(CustomerRow.customer_id == a.customer_id)).one()
    columns = {k: v for k, v in source._mapping.items() if k.endswith("_ct") or k in ("wrapped_dek", "kek_version")}
    with vault.database.write() as connection:
        connection.execute(update(CustomerRow).where(CustomerRow.customer_id == b.customer_id).values(columns))
    with pytest.raises(IntegrityError):
        vault.customers.get(caller(), b.customer_id)


def test_no_plaintext_at_rest(vault: Vault, people: People, database_url: str) -> None:
    stored = [people.next() for _ in range(20)]
    ids = [vault.customers.create(caller("pos"), f"r{n}", profile_of(p)).customer_id for n, p in enumerate(stored)]
    vault.customers.update(caller(), Profile(address="新地址 " + stored[0].address), ids[0], ["address"], 1)
    wanted = needles(stored)
    assert find_in_bytes(table_dump(vault.database.engine), wanted) == []
    if database_url.startswith("sqlite"):
        database_file = Path(database_url.removeprefix("sqlite:///"))
        assert find_in_bytes(sqlite_files(database_file), wanted) == []
    else:
        dump = pg_dump(database_url)
        assert b"COPY public.customers" in dump
        assert find_in_bytes(dump, wanted) == []


def test_the_scanner_finds_plaintext_when_there_is_some(people: People) -> None:
    person = people.next()
    wanted = needles([person])
    assert find_in_bytes(b"\x00" + person.name.encode("gb18030") + b"\x00", wanted)
    assert find_in_bytes(person.national_id.encode("utf-16-le"), wanted)
