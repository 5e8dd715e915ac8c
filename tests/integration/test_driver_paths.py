"""The hot paths that run on the driver's own connection (``Database.read_driver``, ``Database.write_driver``) behave
exactly as the SQLAlchemy paths they stand in for: the same rows with the same types, the same errors, nothing half
written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.customers import repository as repo
from vault.customers.models import IdentifierKind
from vault.storage.db import Database
from vault.storage.models import AuditEventRow, CustomerRow


def test_a_row_fetched_on_the_driver_equals_the_sqlalchemy_row(vault: Vault, people: People) -> None:
    created = vault.customers.create(caller(), "", profile_of(people.next()))
    with vault.database.write() as connection:  # a restricted customer, so that the boolean is not only the default
        connection.execute(
            update(CustomerRow).where(CustomerRow.customer_id == created.customer_id).values(restricted=True)
        )
    with vault.database.read() as connection:
        expected = repo.get_row(connection, created.customer_id)
    with vault.database.read_driver() as reader:
        fetched = repo.fetch_row(reader, created.customer_id)
        missing = repo.fetch_row(reader, "00000000-0000-4000-8000-000000000000")
    assert expected is not None and fetched is not None
    assert fetched._asdict() == expected._asdict()
    for name, value in expected._asdict().items():
        assert type(getattr(fetched, name)) is type(value), name
    assert fetched.restricted is True
    assert fetched.create_time.utcoffset() is not None  # timezone-aware, as the UTC column type returns it
    assert missing is None


def test_the_owner_lookup_on_the_driver_finds_the_customer_and_nobody_else(vault: Vault, people: People) -> None:
    person = people.next()
    created = vault.customers.create(caller(), "", profile_of(person))
    (digest,) = [d for kind, d in vault.customers.digests(created.profile) if kind is IdentifierKind.MOBILE]
    with vault.database.read_driver() as reader:
        assert repo.owner(reader, IdentifierKind.MOBILE, digest) == created.customer_id
        assert repo.owner(reader, IdentifierKind.EMAIL, digest) is None  # the kind is part of the key
        assert repo.owner(reader, IdentifierKind.MOBILE, bytes(32)) is None


def test_a_driver_error_in_a_read_comes_out_as_sqlalchemys_without_parameters(database: Database) -> None:
    with pytest.raises(DBAPIError) as raised, database.read_driver() as reader:
        reader.connection.execute("SELECT no_such_column FROM customers WHERE customer_id = 'synthetic-secret'")
    assert "synthetic-secret" not in str(raised.value.params or "")
    with database.read_driver() as reader:  # the pool hands out a working connection afterwards
        assert reader.connection.execute("SELECT 1").fetchone()[0] == 1


def _events(database: Database) -> int:
    with database.read() as connection:
        return int(connection.execute(select(func.count()).select_from(AuditEventRow)).scalar_one())


def test_a_failed_driver_write_rolls_back_everything_and_raises_operational_error(vault: Vault) -> None:
    database = vault.database
    vault.customers.page(caller(), 1, "")  # one audited call: the chain has a head to extend
    before = _events(database)
    mark = "?" if database.is_sqlite else "%s"

    def move_the_head_then_fail() -> None:
        with database.write_driver() as transaction:
            transaction.connection.execute(f"UPDATE audit_head SET seq = seq + {mark}", (1000,))
            transaction.connection.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(OperationalError):
        move_the_head_then_fail()
    with database.read() as connection:
        head = connection.execute(select(func.max(AuditEventRow.seq))).scalar_one()
    assert _events(database) == before
    vault.customers.page(caller(), 1, "")  # the head was not moved: the next append continues the chain
    assert _events(database) == before + 1
    assert vault.audit_verifier.verify().intact
    with database.read() as connection:
        assert connection.execute(select(func.max(AuditEventRow.seq))).scalar_one() == head + 1
