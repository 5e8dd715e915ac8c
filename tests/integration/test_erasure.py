"""Crypto-shredding and the erasure ledger: erased stays erased, even after restoring an old database copy."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.crypto import CryptoError, FieldCipher, FieldContext
from vault.customers.models import IdentifierKind
from vault.errors import NotFound
from vault.keys.provider import KeyProvider, WrappedKey
from vault.storage.db import Database
from vault.storage.migrate import upgrade
from vault.storage.models import CustomerRow, ErasureRow


def test_shredding_destroys_one_customer_and_nothing_else(vault: Vault, people: People) -> None:
    victim_person = people.next()
    victim = vault.customers.create(caller("pos"), "r-1", profile_of(victim_person))
    bystander = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    with vault.database.read() as connection:
        row = connection.execute(
            select(CustomerRow.__table__).where(CustomerRow.customer_id == victim.customer_id)
        ).one()
    dek = vault.provider.unwrap([WrappedKey(row.wrapped_dek, row.kek_version)])[0]

    assert vault.shredder.shred(caller("dpo-1", "dpo"), victim.customer_id) is True
    with pytest.raises(NotFound):
        vault.customers.get(caller(), victim.customer_id)
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, victim_person.mobile) == []
    assert vault.customers.get(dpo(), bystander.customer_id) == bystander
    with vault.database.read() as connection:
        assert (
            connection.execute(select(CustomerRow).where(CustomerRow.customer_id == victim.customer_id)).first() is None
        )
        assert len(connection.execute(select(ErasureRow)).all()) == 1
    # A copy of the victim's ciphertext (as an old backup or a log would hold it) decrypted under its DEK before;
    # now no wrapped key left in the database unwraps to anything that decrypts it.
    place = FieldContext("customers", victim.customer_id, "name")
    assert FieldCipher(dek, 1).decrypt(row.name_ct, place)
    with vault.database.read() as connection:
        remaining = connection.execute(select(CustomerRow.wrapped_dek, CustomerRow.kek_version)).all()
    for candidate in vault.provider.unwrap([WrappedKey(blob, version) for blob, version in remaining]):
        with pytest.raises(CryptoError):
            FieldCipher(candidate, 1).decrypt(row.name_ct, place)
    # The identifiers are free again and the request id no longer replays the erased customer.
    again = vault.customers.create(caller("pos"), "r-1", profile_of(victim_person))
    assert again.customer_id != victim.customer_id
    assert vault.shredder.shred(caller("dpo-1", "dpo"), "00000000-0000-4000-8000-000000000000") is False


def test_restoring_an_old_copy_does_not_resurrect_an_erased_customer(
    tmp_path: Path, settings: Settings, key_provider: KeyProvider, people: People
) -> None:
    database_file = tmp_path / "live.db"
    url = f"sqlite:///{database_file}"

    def opened() -> Vault:
        return Vault.open(settings, database=Database.from_url(url), provider=key_provider)

    def closed(vault: Vault) -> None:
        vault.close()
        vault.database.dispose()  # injected, so the vault leaves it to us; disposing checkpoints the WAL

    upgrade(Database.from_url(url).engine)
    vault = opened()
    erased = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    kept = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    closed(vault)
    backup = tmp_path / "backup.db"
    shutil.copy(database_file, backup)

    vault = opened()
    vault.shredder.shred(caller("dpo-1", "dpo"), erased.customer_id)
    closed(vault)

    shutil.copy(backup, database_file)  # the operator restores last night's backup
    for suffix in ("-wal", "-shm"):
        Path(str(database_file) + suffix).unlink(missing_ok=True)
    restored = opened()
    try:
        with pytest.raises(NotFound):
            restored.customers.get(caller(), erased.customer_id)
        assert restored.customers.get(dpo(), kept.customer_id) == kept
    finally:
        closed(restored)
    assert settings.effective_erasure_ledger_path.read_text().count("subject") == 1


def test_a_torn_ledger_line_does_not_swallow_the_next_erasure(tmp_path: Path) -> None:
    from vault.customers.erasure import ErasureLedgerFile

    path = tmp_path / "ledger.jsonl"
    ledger = ErasureLedgerFile(path)
    ledger.append(b"\x01" * 32, dt.datetime.now(dt.UTC))
    with path.open("a") as handle:
        handle.write('{"v": 1, "subject": "0202')  # a crash in the middle of writing a record
    ledger.append(b"\x03" * 32, dt.datetime.now(dt.UTC))
    assert ledger.subjects() == {b"\x01" * 32, b"\x03" * 32}
