"""The parallel import (vault.imports.parallel) gives the report and the stored data of a sequential import.

Each test imports the same files twice, into two vaults that start equal: once with ``ImportService`` in this process,
once with worker processes. Blocks are made tiny, so that one person's rows, and an order and its return, land in
different blocks and the dealing rules (a row follows its identifiers to their worker; a group whose identifiers went
to two workers waits for both) are what keeps them right.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from tests.support import canary
from tests.support.people import People, Person, caller, dpo
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import Profile
from vault.errors import VersionConflict
from vault.imports import parallel
from vault.imports.parallel import ImportWorkerFailed, ParallelImport, groups
from vault.imports.reader import read_table
from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService, ImportSummary, RowResult
from vault.storage.db import Database
from vault.storage.migrate import upgrade

WHO = caller("crm-import", "service", "cli:import")
CUSTOMER_HEADERS = ["姓名", "手机号码", "邮箱", "会员卡号", "地址", "外部编号"]
PURCHASE_HEADERS = ["会员卡号", "订单号", "下单时间", "金额", "sku", "数量", "return_of_order_id"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def twins(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Settings, Settings]:
    """Settings of two new, migrated vaults, each with its own local keyring."""
    found: list[Settings] = []
    for name in ("sequential", "parallel"):
        data = tmp_path / name
        data.mkdir()
        if request.param == "sqlite":
            url = f"sqlite:///{data / 'piivault.db'}"
        else:
            databases = request.getfixturevalue("postgres_databases")
            url = databases.create(databases.migrated_template())
        settings = Settings(data_dir=data, database_url=url, key_settle_seconds=0)
        database = Database.from_url(url)
        upgrade(database.engine)
        Vault.open(settings, database=database).close()  # creates the keyring and the service keys
        database.dispose()
        found.append(settings)
    return found[0], found[1]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 5 rows and at most 10 queued: dealing, following and waiting happen many times in a small file.
    (The workers are forked after this, so they see it too.)"""
    monkeypatch.setattr(parallel, "BLOCK_ROWS", 5)
    monkeypatch.setattr(parallel, "MAX_QUEUED_ROWS", 10)


def write_csv(path: Path, headers: list[str], table: list[list[str]]) -> Path:
    canary.allow(path, "a channel's import file, the input given to the importer")
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([headers, *table])
    return path


def spaced(mobile: str) -> str:
    return f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}"


def customer_table(people: list[Person]) -> list[list[str]]:
    """Rows that exercise every dealing rule: people repeated far apart with the phone rewritten, a person whose two
    rows are joined only through a third, rows that clash, and invalid rows."""
    table: list[list[str]] = []
    for n, p in enumerate(people[:12]):
        table.append([p.name, p.mobile, "", "", "", f"C-{n}"])
    for n, p in enumerate(people[:12]):  # the same people again, 12 rows later: other blocks, the same worker
        table.append(["", spaced(p.mobile), p.email, p.member_id, f"{n}号", ""])
    a, b, c = people[12], people[13], people[14]
    table += [
        [a.name, "", a.email, "", "", ""],  # a by email
        ["", a.mobile, "", a.member_id, "", ""],  # a by mobile: no identifier in common with the row above ...
        ["", "", a.email, a.member_id, "上海", ""],  # ... until this one joins them (one group, in file order)
        ["另一个名字", b.mobile, "", "", "", ""],
        [b.name, spaced(b.mobile), "", "", "", ""],  # another name for b: a conflict, kept as first written
        ["", a.mobile, b.email, "", "", ""],  # a's phone with b's email: two people, ambiguous
        ["", b.mobile, b.email, "", "", ""],
        [c.name, c.mobile, c.email, "", "", ""],
        ["坏号码", "12345", "", "", "", ""],  # invalid mobile
        ["无联系方式", "", "", "", "", ""],  # no identifier
    ]
    return table


def report(summary: ImportSummary) -> list[tuple[object, ...]]:
    """The per-row report in file order, each customer id replaced by the order in which the report first names it."""
    labels: dict[str, int] = {}
    lines: list[tuple[object, ...]] = []
    for r in sorted(summary.results, key=lambda result: result.row):
        label = labels.setdefault(r.customer_id, len(labels)) if r.customer_id else -1
        lines.append((r.row, r.outcome, label, r.reason, r.field, r.filled, r.conflicts))
    return lines


def stored(settings: Settings) -> list[tuple[object, ...]]:
    """Every live customer, decrypted, without ids and times (those differ between two vaults by design)."""
    vault = Vault.open(settings)
    try:
        ids: list[str] = []
        token = ""
        while True:
            page = vault.customers.page(dpo(), 100, token)
            ids += [customer.customer_id for customer in page.customers]
            if not (token := page.next_page_token):
                break
        profiles = [vault.customers.open(customer_id)[0].profile for customer_id in ids]
        return sorted(_plain(profile) for profile in profiles)
    finally:
        vault.close()


def _plain(profile: Profile) -> tuple[object, ...]:
    values = dataclasses.asdict(profile)
    values["external_refs"] = sorted((ref["source"], ref["id"]) for ref in values["external_refs"])
    return tuple(sorted((key, str(value)) for key, value in values.items()))


def import_both(
    twins: tuple[Settings, Settings], kind: str, source: str, path: Path, jobs: int = 2
) -> tuple[ImportSummary, ImportSummary]:
    sequential_settings, parallel_settings = twins
    fields = CUSTOMER_FIELDS if kind == "customers" else PURCHASE_FIELDS
    vault = Vault.open(sequential_settings)
    try:
        importer = ImportService(vault.customers, vault.purchases)
        method = importer.customers if kind == "customers" else importer.purchases
        sequential = method(WHO, source, read_table(path, {}, fields).rows)
    finally:
        vault.close()
    progress: list[int] = []
    with ParallelImport(parallel_settings, kind, WHO, source, jobs, progress.append) as importer_:
        in_parallel = importer_.run(read_table(path, {}, fields).rows)
    assert sum(progress) == len(in_parallel.results)  # every row was counted once on the progress bar
    return sequential, in_parallel


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("jobs", [2, 3])
def test_customers_imported_in_parallel_match_a_sequential_import(
    twins: tuple[Settings, Settings], tmp_path: Path, jobs: int
) -> None:
    people = People(seed=41).many(15)
    # Customers stored before the import: the rows below merge into them, in both vaults alike.
    before = write_csv(
        tmp_path / "before.csv", CUSTOMER_HEADERS, [[p.name, p.mobile, "", "", "", ""] for p in people[:4]]
    )
    import_both(twins, "customers", "crm", before, jobs)
    path = write_csv(tmp_path / "members.csv", CUSTOMER_HEADERS, customer_table(people))

    sequential, in_parallel = import_both(twins, "customers", "crm", path, jobs)

    assert report(in_parallel) == report(sequential)
    assert in_parallel.counts == sequential.counts
    outcomes = {line[1] for line in report(sequential)}
    assert outcomes == {"created", "merged", "unchanged", "rejected"}  # the file exercises every outcome
    assert {line[3] for line in report(sequential)} >= {"invalid", "ambiguous"}
    assert stored(twins[1]) == stored(twins[0])
    # Importing the file again changes nothing, in parallel too.
    _, again = import_both(twins, "customers", "crm", path, jobs)
    assert "created" not in again.counts and "merged" not in again.counts
    assert stored(twins[1]) == stored(twins[0])


@pytest.mark.usefixtures("small_blocks")
def test_purchases_imported_in_parallel_match_a_sequential_import(
    twins: tuple[Settings, Settings], tmp_path: Path
) -> None:
    people = People(seed=43).many(6)
    members = write_csv(
        tmp_path / "members.csv", CUSTOMER_HEADERS, [[p.name, p.mobile, "", p.member_id, "", ""] for p in people]
    )
    import_both(twins, "customers", "crm", members)
    table: list[list[str]] = []
    for n in range(40):
        p = people[n % len(people)]
        table.append([p.member_id, f"O-{n}", f"2026-03-{1 + n % 28:02d} 10:00:00", f"{10 + n}.00", f"SKU-{n}", "1", ""])
        if n % 4 == 3:  # a return right after its order: often in the next block, so it must follow it to its worker
            table.append([p.member_id, f"R-O-{n}", "2026-04-01 10:00:00", "1.00", f"SKU-{n}", "1", f"O-{n}"])
    table += [
        [people[0].member_id, "R-1", "2026-04-01 10:00:00", "10.00", "SKU-0", "1", "O-0"],  # returns an early order
        [people[1].member_id, "R-2", "2026-04-01 10:00:00", "11.00", "SKU-1", "1", "O-NONE"],  # returns no order
        [people[2].member_id, "O-2", "2026-03-03 10:00:00", "12.00", "SKU-2", "1", ""],  # O-2 again, same content
        [people[2].member_id, "O-3", "2026-03-03 10:00:00", "99.00", "SKU-3", "1", ""],  # O-3 again, other content
        ["M-NOBODY", "O-900", "2026-03-03 10:00:00", "1.00", "", "", ""],  # no such customer
        [people[3].member_id, "O-901", "2026-03-03 10:00:00", "abc", "", "", ""],  # not an amount
        [people[4].member_id, "R-3", "2026-04-02 10:00:00", "20.00", "SKU-20", "1", "O-20"],
    ]
    path = write_csv(tmp_path / "orders.csv", PURCHASE_HEADERS, table)

    sequential, in_parallel = import_both(twins, "purchases", "pos", path)

    assert report(in_parallel) == report(sequential)
    assert in_parallel.counts == sequential.counts
    assert sequential.counts["duplicates"] == 1
    assert sequential.counts["recorded"] == 53  # 40 orders, 12 returns of recorded orders, and O-2 again
    assert {(line[3], line[4]) for line in report(sequential) if line[1] == "rejected"} == {
        ("invalid", "purchase.return_of_order_id"),
        ("invalid", "purchase.order_id"),
        ("not_found", "customer"),
        ("invalid", "amount"),
    }
    _, again = import_both(twins, "purchases", "pos", path)
    assert again.counts["recorded"] == again.counts["duplicates"] == 53


def test_groups_join_rows_that_share_an_identifier_in_file_order() -> None:
    joined = groups([["a"], ["b"], ["c", "a"], ["d"], ["b", "c"], [], ["e"], ["d"]])
    assert joined == [[0, 1, 2, 4], [3, 7], [5], [6]]


def test_a_worker_that_cannot_open_the_vault_stops_the_import_without_a_value(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, key_settle_seconds=0)  # no schema: every worker fails to open it
    person = People(seed=47).next()
    path = write_csv(tmp_path / "one.csv", CUSTOMER_HEADERS, [[person.name, person.mobile, "", "", "", ""]])
    with (
        pytest.raises(ImportWorkerFailed, match="SchemaError") as failed,
        ParallelImport(settings, "customers", WHO, "crm", 2) as importer,
    ):
        importer.run(read_table(path, {}, CUSTOMER_FIELDS).rows)
    assert person.mobile not in str(failed.value) and person.name not in str(failed.value)


def import_rows(importer: ImportService, path: Path, table: list[list[str]]) -> list[RowResult]:
    write_csv(path, CUSTOMER_HEADERS, table)
    return importer.customers(WHO, "crm", read_table(path, {}, CUSTOMER_FIELDS).rows).results


def test_a_merge_that_loses_a_race_is_retried_on_the_customer_as_it_is_now(
    vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    person = People(seed=53).next()
    importer = ImportService(vault.customers, vault.purchases)
    [created] = import_rows(importer, tmp_path / "a.csv", [[person.name, person.mobile, "", "", "", ""]])
    update = vault.customers.update
    raced: list[int] = []

    def racing(*args: object, **kwargs: object) -> object:
        if not raced:  # another writer stores the address between the import's read and its update
            customer, _ = vault.customers.open(created.customer_id)
            patch = Profile(address="北京市朝阳区1号")
            raced.append(customer.version)
            update(WHO, patch, created.customer_id, ("address",), customer.version)
        return update(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vault.customers, "update", racing)
    [merged] = import_rows(importer, tmp_path / "b.csv", [["", person.mobile, person.email, "", "", ""]])

    assert raced and (merged.outcome, merged.filled) == ("merged", ("email",))
    customer, _ = vault.customers.open(created.customer_id)
    assert (customer.profile.email, customer.profile.address) == (person.email, "北京市朝阳区1号")
    assert customer.version == raced[0] + 2


def test_a_merge_that_keeps_losing_is_rejected_as_a_version_conflict(
    vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    person = People(seed=59).next()
    importer = ImportService(vault.customers, vault.purchases)
    import_rows(importer, tmp_path / "a.csv", [[person.name, person.mobile, "", "", "", ""]])

    def always_stale(*_: object, **__: object) -> object:
        raise VersionConflict()

    monkeypatch.setattr(vault.customers, "update", always_stale)
    [row] = import_rows(importer, tmp_path / "b.csv", [["", person.mobile, person.email, "", "", ""]])
    assert (row.outcome, row.reason) == ("rejected", "version_conflict")


def test_the_import_command_uses_workers_for_a_large_file_and_reports_as_one_process(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    people = People(seed=61).many(parallel.MIN_ROWS // 2)
    table = [[p.name, p.mobile, "", p.member_id, "", ""] for p in people]
    table += [["", spaced(p.mobile), p.email, "", "", ""] for p in people]  # everyone again: merged
    path = write_csv(tmp_path / "members.csv", CUSTOMER_HEADERS, table)
    piivault = str(Path(sys.executable).parent / "piivault")
    answers = []
    for jobs in ("1", "2"):
        env = {**os.environ, "PIIVAULT_DATA_DIR": str(tmp_path / f"var-{jobs}")}
        subprocess.run([piivault, "migrate"], env=env, check=True, capture_output=True, timeout=120)
        report_path = tmp_path / f"report-{jobs}.csv"
        command = [piivault, "import", "customers", str(path), "--source", "crm", "--report", str(report_path)]
        done = subprocess.run(
            [*command, "--jobs", jobs],
            env=env,
            capture_output=True,
            timeout=300,
            check=True,
        )
        with report_path.open(encoding="utf-8") as handle:
            lines = list(csv.DictReader(handle))
        labels: dict[str, int] = {}
        audited = subprocess.run(
            [piivault, "audit", "query", "--action", "cli:import customers", "--format", "json", "--limit", "100000"],
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
        answers.append(
            (
                json.loads(done.stdout),
                [(line["row"], line["outcome"], labels.setdefault(line["customer_id"], len(labels))) for line in lines],
                b"2 worker processes" in done.stderr,
            )
        )
        # The command itself is recorded once (the event naming no customer), however many processes import its rows;
        # every created or merged customer has its own events under the same action.
        events = [json.loads(line) for line in audited.stdout.splitlines()]
        assert [event["seq"] for event in events if not event["customer_ids"]] == ["1"]
        assert len({event["customer_ids"] for event in events}) == len(people) + 1
    assert answers[0][0] == answers[1][0] == {"created": len(people), "merged": len(people), "conflicts": 0}
    assert answers[0][1] == answers[1][1]
    assert (answers[0][2], answers[1][2]) == (False, True)


def _alive(pid: int) -> bool:
    """Whether a process still runs (a zombie waiting to be reaped has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_workers_stop_by_themselves_when_the_importing_process_is_killed(twins: tuple[Settings, Settings]) -> None:
    import subprocess
    import sys
    import time

    settings = twins[1]
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from tests.support.people import caller\n"
        "from vault.config import Settings\n"
        "from vault.imports.parallel import ParallelImport\n"
        f"settings = Settings(data_dir=Path({str(settings.data_dir)!r}), database_url={settings.database_url!r})\n"
        "importer = ParallelImport(settings, 'customers', caller(), 'crm', 2)\n"
        "print(' '.join(str(process.pid) for process in importer._processes), flush=True)\n"
        "time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parents[2]
    main = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert main.stdout is not None
        workers = [int(pid) for pid in main.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    finally:
        main.kill()  # SIGKILL: the main process cleans nothing up
        main.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
