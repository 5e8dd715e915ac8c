"""The hot paths that run on the driver's own connection (``Database.read_driver``, ``Database.write_driver``) behave
exactly as the SQLAlchemy paths they stand in for: the same rows with the same types, the same errors, nothing half
written."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from audit.events import AuditDraft, Caller
from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.customers import repository as repo
from vault.customers.models import IdentifierKind
from vault.storage.db import (
    WRITER_CACHE_KIB,
    Database,
    DriverInsert,
    DriverQuery,
    DriverReader,
    DriverTransaction,
    answering_within,
)
from vault.storage.migrate import upgrade
from vault.storage.models import AuditEventRow, AuditSubjectRow, CustomerRow, UTCDateTime


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
    mark = "?" if database.is_sqlite else "%s"
    with pytest.raises(DBAPIError) as raised, database.read_driver() as reader:
        reader.connection.execute(f"SELECT no_such_column FROM customers WHERE customer_id = {mark}", ("synthetic-s",))
    assert raised.value.params is None
    assert "synthetic-s" not in str(raised.value)
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


_metadata = MetaData()
_typed = Table(
    "driver_typed",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("label", String(20)),
    Column("blob", LargeBinary),
    Column("at", UTCDateTime),
    Column("flag", Boolean),
    Column("code", String(20), unique=True),
)


def test_rows_inserted_on_the_driver_read_back_as_sqlalchemy_inserted_them(database: Database) -> None:
    """Same values inserted both ways read back equal (datetimes, booleans, blobs, NULLs), in one group of rows naming
    different columns; a taken key comes out as SQLAlchemy's IntegrityError, without the values."""
    _metadata.create_all(database.engine)
    at = dt.datetime(2026, 11, 22, 20, 1, 2, 345678, tzinfo=dt.UTC)
    rows: list[dict[str, Any]] = [
        {"label": "full", "blob": b"\x00\xffciphertext", "at": at, "flag": True},
        {"label": "sparse", "blob": None, "at": at, "flag": False},
        {"label": "fewer columns"},
        {},  # the key alone: one column
        {"at": at},  # one converted column
    ]
    with database.write() as connection:
        for n, row in enumerate(rows):  # one statement each: SQLAlchemy's executemany needs the same columns in all
            connection.execute(insert(_typed), {"id": n, **row})
        DriverInsert(_typed).execute(
            DriverTransaction.of(connection), connection.dialect, [{"id": 100 + n, **row} for n, row in enumerate(rows)]
        )
    with database.read() as connection:
        stored: dict[int, dict[str, Any]] = {row.id: row._asdict() for row in connection.execute(select(_typed))}
    for n in range(len(rows)):
        by_driver = {**stored[100 + n], "id": n}
        assert by_driver == stored[n]
    assert stored[100]["at"] == at and stored[100]["flag"] is True
    with pytest.raises(IntegrityError) as raised, database.write() as connection:
        DriverInsert(_typed).execute(
            DriverTransaction.of(connection),
            connection.dialect,
            [{"id": 7, "code": "taken-code"}, {"id": 8, "code": "taken-code"}],
        )
    # The parameters are not attached. (PostgreSQL's own message names a conflicting key; the API never shows or logs
    # a database error's text, only its type.)
    assert raised.value.params is None
    with database.read() as connection:  # nothing of the refused transaction was written
        assert connection.execute(select(func.count()).select_from(_typed)).scalar_one() == 2 * len(rows)


def test_an_append_of_more_rows_than_one_statement_holds_extends_one_verifiable_chain(vault: Vault) -> None:
    """300 events naming 3 customers each (900 subject rows): more than one multi-row statement on SQLite."""
    who = Caller("bench", "service", "/piivault.v1.CustomerService/ListCustomers", "r-1", "ipv4:10.0.0.1:5")
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(900)]
    drafts = [AuditDraft.of(who, "ok", tuple(ids[3 * n : 3 * n + 3]), ("mobile",)) for n in range(300)]
    before = _events(vault.database)
    with vault.database.write_driver() as transaction:
        vault.audit.append(transaction, drafts)
    assert _events(vault.database) == before + 300
    with vault.database.read() as connection:
        assert connection.execute(select(func.count()).select_from(AuditSubjectRow)).scalar_one() >= 900
    assert vault.audit_verifier.verify().intact


def test_a_write_lock_timeout_on_the_driver_keeps_the_healthy_connection(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'locked.db'}")
    upgrade(database.engine)
    connects: list[object] = []
    event.listen(database._write_engine, "connect", lambda *_: connects.append(1))
    with database.write_driver() as transaction:  # one writer connection, opened and pooled
        transaction.connection.execute("UPDATE audit_head SET seq = seq")
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, as far as this database knows
    try:
        with pytest.raises(OperationalError), answering_within(0.2), database.write_driver():
            pytest.fail("the write lock is held elsewhere")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with database.write_driver() as transaction:
        transaction.connection.execute("UPDATE audit_head SET seq = seq")
    assert len(connects) == 1  # the timed-out connection went back to the pool; nothing reconnected
    database.dispose()


def test_statements_that_need_sqlalchemys_parameter_processing_are_refused() -> None:
    customers = CustomerRow.__table__
    for statement in (
        select(customers).where(customers.c.kek_version == 3),  # a bound constant
        select(customers).where(customers.c.customer_id.in_(bindparam("ids", expanding=True))),  # expanding IN
    ):
        with pytest.raises(ValueError, match="parameter processing"):
            DriverQuery(statement, "Refused").first(DriverReader(None, sqlite_dialect.dialect()), {})
    defaulted = Table(
        "driver_defaulted", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer, default=1)
    )
    with pytest.raises(ValueError, match="defaults"):
        DriverInsert(defaulted)


def test_sqlite_writers_keep_a_larger_page_cache_than_readers(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'cache.db'}")
    try:
        with database.write_driver() as transaction:
            writer = transaction.connection.execute("PRAGMA cache_size").fetchone()[0]
        with database.read() as connection:
            reader = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    finally:
        database.dispose()
    assert writer == -WRITER_CACHE_KIB  # negative: KiB, not pages
    assert reader == -2000  # SQLite's default
