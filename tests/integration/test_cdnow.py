"""The public CDNOW purchase data set (from the `lifetimes` package) replayed as purchases of synthetic customers:
per-customer frequency and monetary totals from the pseudonymised analytics export equal those of the file."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from consent.models import Channel, ConsentRequest, ConsentScope
from tests.support.people import caller
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import Profile
from vault.purchases.models import PurchaseInput
from vault.storage.models import PseudonymRow

ANALYTICS = ConsentRequest(
    "analytics", ConsentScope.STANDARD, Channel.WEB, notice_version="a1", notice_sha256="ab" * 32
)


def cdnow_file() -> Path:
    spec = importlib.util.find_spec("lifetimes")  # located, never imported (its dependencies are not installed)
    assert spec is not None and spec.submodule_search_locations, "make test installs lifetimes for this data set"
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def cdnow_rows() -> list[tuple[str, dt.datetime, int, int]]:
    """(CDNOW customer, day, number of CDs, value in cents) for every line of the file."""
    rows = []
    for line in cdnow_file().read_text().splitlines()[1:]:
        customer, day, cds, dollars = line.split()
        cents = round(float(dollars) * 100)
        rows.append((customer, dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC), int(cds), cents))
    return rows


@pytest.fixture
def cdnow_vault(tmp_path: Path) -> Iterator[Vault]:
    settings = Settings(data_dir=tmp_path, key_settle_seconds=0, analytics_settle_seconds=0)
    from vault.storage.db import Database
    from vault.storage.migrate import upgrade

    database = Database.from_url(settings.effective_database_url)
    upgrade(database.engine)
    vault = Vault.open(settings, database=database)
    yield vault
    vault.close()
    database.dispose()


# `make test` replays the complete histories of the first customers of the file; `make soak` (PIIVAULT_TEST_CDNOW=all)
# the whole file: 23,570 customers, 69,659 purchases, about a minute on the 2-core development machine.
CUSTOMERS = os.environ.get("PIIVAULT_TEST_CDNOW", "3000")


def test_cdnow_totals_survive_the_pseudonymised_export(cdnow_vault: Vault) -> None:
    vault = cdnow_vault
    every_row = cdnow_rows()
    assert len(every_row) == 69_659
    everyone = sorted({customer for customer, *_ in every_row})
    assert len(everyone) == 23_570
    cdnow_ids = everyone if CUSTOMERS == "all" else everyone[: int(CUSTOMERS)]
    chosen = set(cdnow_ids)
    rows = [row for row in every_row if row[0] in chosen]
    who = caller("cdnow-import", "service")

    def create(index: int) -> str:
        # Synthetic people: a generated name and a number in a test range, never anything from the data set.
        profile = Profile(name=f"顾客{index:05d}", mobile=f"+8613{index:09d}")
        return vault.customers.create(who, "", profile).customer_id

    with ThreadPoolExecutor(8) as pool:
        customer_of = dict(zip(cdnow_ids, pool.map(create, range(len(cdnow_ids))), strict=True))
        list(pool.map(lambda customer_id: vault.consents.grant(who, customer_id, ANALYTICS), customer_of.values()))
    purchases = [
        (
            customer_of[customer],
            PurchaseInput(
                source="cdnow",
                order_id=f"cdnow-{n}",
                purchase_time=day,
                amount_minor=cents,
                currency="USD",
                store_id="cdnow",
            ),
        )
        for n, (customer, day, cds, cents) in enumerate(rows)
    ]
    summary = vault.purchases.record_many(who, purchases)
    assert (summary.recorded, summary.rejected) == (len(rows), 0)

    exported = [p for page in vault.analytics.pages(caller("bi", "analyst"), "", 10_000) for p in page.purchases]
    frequency: Counter[str] = Counter(p.pseudonym for p in exported)
    monetary: defaultdict[str, int] = defaultdict(int)
    for p in exported:
        monetary[p.pseudonym] += p.amount_minor

    expected_frequency: Counter[str] = Counter(customer for customer, *_ in rows)
    expected_monetary: defaultdict[str, int] = defaultdict(int)
    for customer, _, _, cents in rows:
        expected_monetary[customer] += cents
    # The mapping exists only inside the vault; the test reads it to compare customer by customer.
    with vault.database.read() as connection:
        rows_of_mapping = connection.execute(select(PseudonymRow.customer_id, PseudonymRow.pseudonym)).all()
    pseudonym_of = {row.customer_id: row.pseudonym for row in rows_of_mapping}
    for cdnow_id, customer_id in customer_of.items():
        pseudonym = pseudonym_of[customer_id]
        assert (frequency[pseudonym], monetary[pseudonym]) == (
            expected_frequency[cdnow_id],
            expected_monetary[cdnow_id],
        )
    assert len(frequency) == len(cdnow_ids) and sum(frequency.values()) == len(rows)
