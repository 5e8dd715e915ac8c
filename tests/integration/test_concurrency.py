"""Races: one request_id from 100 threads, two updates at one version (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.customers.models import Customer, Profile
from vault.errors import PiivaultError, VersionConflict


def test_one_request_id_from_100_threads_creates_one_customer(vault: Vault, people: People) -> None:
    profile = profile_of(people.next())
    start = threading.Barrier(100)

    def create(_: int) -> Customer:
        start.wait()
        return vault.customers.create(caller("pos"), "same-request", profile)

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(create, range(100)))
    assert len({customer.customer_id for customer in results}) == 1
    assert len(vault.customers.page(caller(), 500, "").customers) == 1


def test_two_updates_at_the_same_version_one_wins(vault: Vault, people: People) -> None:
    created = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    for round_number in range(10):
        version = vault.customers.get(caller(), created.customer_id).version
        start = threading.Barrier(2)

        def update(name: str, expected: int = version, start: threading.Barrier = start) -> Customer | PiivaultError:
            start.wait()
            try:
                return vault.customers.update(caller(), Profile(name=name), created.customer_id, ["name"], expected)
            except PiivaultError as error:
                return error

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(update, [f"甲{round_number}", f"乙{round_number}"]))
        winners = [o for o in outcomes if isinstance(o, Customer)]
        losers = [o for o in outcomes if isinstance(o, VersionConflict)]
        assert len(winners) == 1 and len(losers) == 1
        read = vault.customers.get(dpo(), created.customer_id)
        assert (read.version, read.profile.name) == (winners[0].version, winners[0].profile.name)
