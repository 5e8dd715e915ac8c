"""FindCustomers answers no earlier than the latency floor, for a hit, a miss and a restricted customer alike.

Whether the two latencies are *indistinguishable* is a statistical question for ``bench/lookup_timing.py`` (medians
and a Kolmogorov-Smirnov test, in ``make bench``); here the floor itself is checked on both databases.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import update

from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import IdentifierKind
from vault.errors import ProcessingRestricted
from vault.keys.provider import KeyProvider
from vault.storage.db import Database
from vault.storage.models import CustomerRow

FLOOR_MS = 40.0


@pytest.fixture
def floored(settings: Settings, database: Database, key_provider: KeyProvider) -> Iterator[Vault]:
    opened = Vault.open(replace(settings, find_floor_ms=FLOOR_MS), database=database, provider=key_provider)
    yield opened
    opened.close()


def _elapsed_ms(call: object) -> float:
    assert callable(call)
    started = time.monotonic()
    with contextlib.suppress(ProcessingRestricted):
        call()
    return (time.monotonic() - started) * 1000


def test_every_find_outcome_leaves_at_or_after_the_floor(floored: Vault, database: Database, people: People) -> None:
    person, restricted = people.next(), people.next()
    created = floored.customers.create(caller(), "", profile_of(person))
    held = floored.customers.create(caller(), "", profile_of(restricted))
    with database.engine.begin() as connection:  # as a restriction request leaves it (vault/dsar)
        connection.execute(
            update(CustomerRow).where(CustomerRow.customer_id == held.customer_id).values(restricted=True)
        )

    def find(mobile: str) -> object:
        return lambda: floored.customers.find(caller(), IdentifierKind.MOBILE, mobile)

    with pytest.raises(ProcessingRestricted):
        floored.customers.find(caller(), IdentifierKind.MOBILE, restricted.mobile)
    assert [c.customer_id for c in floored.customers.find(caller(), IdentifierKind.MOBILE, person.mobile)] == [
        created.customer_id
    ]
    for outcome, call in (
        ("hit", find(person.mobile)),
        ("miss", find("13700000001")),
        ("restricted", find(restricted.mobile)),
    ):
        assert _elapsed_ms(call) >= FLOOR_MS, outcome


def test_the_default_settings_have_a_floor(vault: Vault) -> None:
    assert Settings().find_floor_ms > 0
    assert Settings.from_env({"PIIVAULT_FIND_FLOOR_MS": "0"}).find_floor_ms == 0
