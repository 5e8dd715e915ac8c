"""KEK rotation: online rewrap with a concurrent reader, resumability, and the minimum-version guard."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.crypto import CryptoError
from vault.keys.provider import MinimumVersionRefused, WrappedKey
from vault.keys.service_keys import SERVICE_KEY_NAMES
from vault.storage.models import CustomerRow

SERVICE_KEYS = len(SERVICE_KEY_NAMES)


def _wrapped(vault: Vault, customer_id: str) -> WrappedKey:
    with vault.database.read() as connection:
        row = connection.execute(CustomerRow.__table__.select().where(CustomerRow.customer_id == customer_id)).one()
    return WrappedKey(row.wrapped_dek, row.kek_version)


def test_rotation_is_online_and_complete(vault: Vault, people: People) -> None:
    customers = [vault.customers.create(caller("pos"), "", profile_of(people.next())) for _ in range(120)]
    old = _wrapped(vault, customers[0].customer_id)
    with pytest.raises(MinimumVersionRefused):
        vault.keys.raise_min_decryption_version(2)  # there is no version 2 yet

    failures: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for customer in customers:
                try:
                    assert vault.customers.get(dpo(), customer.customer_id) == customer
                    reads += 1
                except BaseException as error:  # noqa: BLE001 - collected and asserted below
                    failures.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    steps = list(vault.keys.rotate())
    stop.set()
    thread.join()

    assert failures == []
    assert reads > 0
    assert steps[-1].finished
    assert steps[-1].target_version == 2
    assert steps[-1].rewrapped == 120 + SERVICE_KEYS  # every customer DEK and every service key
    counts = vault.keys.counts()
    assert counts.customer_deks == {2: 120}
    assert counts.service_keys == {2: SERVICE_KEYS}
    vault.keys.raise_min_decryption_version(2)
    assert vault.provider.status().min_decryption_version == 2
    with pytest.raises(CryptoError):
        vault.provider.unwrap([old])  # version 1 is retired
    vault.data_keys.cache.invalidate(customers[0].customer_id)
    assert vault.customers.get(dpo(), customers[0].customer_id) == customers[0]


def test_raising_the_minimum_is_refused_while_keys_lag_behind(vault: Vault, people: People) -> None:
    for _ in range(5):
        vault.customers.create(caller("pos"), "", profile_of(people.next()))
    vault.provider.rotate()  # rotated, but nothing rewrapped yet: as if the rotation crashed here
    with pytest.raises(MinimumVersionRefused, match=f"{5 + SERVICE_KEYS} wrapped keys are still below version 2"):
        vault.keys.raise_min_decryption_version(2)
    final = list(vault.keys.rewrap())[-1]  # resuming finishes the job
    assert (final.rewrapped, final.total, final.skipped) == (5 + SERVICE_KEYS, 5 + SERVICE_KEYS, 0)
    vault.keys.raise_min_decryption_version(2)


def test_new_customers_after_rotation_use_the_new_version(vault: Vault, people: People) -> None:
    vault.customers.create(caller("pos"), "", profile_of(people.next()))
    list(vault.keys.rotate())
    created = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    assert _wrapped(vault, created.customer_id).kek_version == 2


def test_a_row_that_changes_during_its_batch_is_left_alone(
    vault: Vault, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = [vault.customers.create(caller("pos"), "", profile_of(people.next())) for _ in range(4)]
    vault.provider.rotate()
    real_rewrap = vault.provider.rewrap

    def rewrap_while_someone_erases(wrapped: list[WrappedKey]) -> list[WrappedKey]:
        result = real_rewrap(wrapped)
        if len(wrapped) == 4:  # the customers' batch: erase one of them before the write-back
            vault.shredder.shred(caller("dpo-1", "dpo"), created[0].customer_id)
        return result

    monkeypatch.setattr(vault.provider, "rewrap", rewrap_while_someone_erases)
    final = list(vault.keys.rewrap())[-1]
    assert (final.rewrapped, final.skipped) == (3 + SERVICE_KEYS, 1)
    assert vault.keys.counts().customer_deks == {2: 3}


def test_retiring_a_version_waits_until_no_process_can_hold_old_pooled_keys(vault: Vault, people: People) -> None:
    import time

    from vault.keys.rotation import KeyRotation

    vault.customers.create(caller(), "", profile_of(people.next()))
    now = [time.time()]
    keys = KeyRotation(vault.database, vault.provider, vault.data_keys, settle_seconds=60, clock=lambda: now[0])
    list(keys.rotate())
    with pytest.raises(MinimumVersionRefused, match="wait"):
        keys.raise_min_decryption_version(2)
    now[0] += 61
    keys.raise_min_decryption_version(2)
    assert vault.provider.status().min_decryption_version == 2


def test_a_corrupt_wrapped_key_does_not_stop_the_others_from_moving(vault: Vault, people: People) -> None:
    created = [vault.customers.create(caller(), "", profile_of(people.next())) for _ in range(4)]
    victim = created[1].customer_id
    good = _wrapped(vault, created[0].customer_id).blob
    with vault.database.write() as connection:  # someone pasted another customer's wrapped key, then flipped a bit
        tampered = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
        connection.execute(update(CustomerRow).where(CustomerRow.customer_id == victim).values(wrapped_dek=tampered))
    final = list(vault.keys.rotate())[-1]
    assert final.finished
    assert (final.rewrapped, final.skipped) == (3 + SERVICE_KEYS, 1)
    assert vault.keys.counts().customer_deks == {1: 1, 2: 3}
    with pytest.raises(MinimumVersionRefused, match="1 wrapped keys are still below"):
        vault.keys.raise_min_decryption_version(2)
