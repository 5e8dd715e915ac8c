"""Instructions per operation, counted by valgrind's callgrind: figures that hold still on a shared, noisy machine.

Wall-clock and even CPU-time figures on the 2-vCPU development host vary by a third between runs, which hides a 5-20%
change. Callgrind counts the instructions a process executes: the same code on the same input gives the same count
whatever else the machine is doing. This compares the working tree with another revision (``--base``, checked out
into a temporary worktree), phase by phase, each phase in a process of its own:

- ``import-customers``: the bench CSV of customers (a fifth of the people repeated with a rewritten phone) imported
  into an empty vault;
- ``import-purchases``: a CSV of purchases imported into a vault holding those customers;
- ``create``, ``read``, ``find``: CustomerService in-process, one thread, on a vault of ``--ops`` customers.

Each count has the count of a process that opens the same vault and does nothing subtracted, then is divided by the
rows or operations. Threads are serialised under valgrind, so this measures work, not contention; and it is slow
(about 50 times), hence the small sizes.

    python -m bench.instructions --base HEAD~3
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vault.app import Vault
    from vault.storage.db import Database

PHASES = ("import-customers", "import-purchases", "create", "read", "find")


def _open(data: Path) -> tuple[Vault, Database]:
    from vault.app import Vault
    from vault.config import Settings
    from vault.storage.db import Database
    from vault.storage.migrate import upgrade

    settings = Settings(data_dir=data, lookups_per_minute=0, lookups_per_day=0, find_floor_ms=0, key_settle_seconds=0)
    database = Database.from_url(settings.effective_database_url)
    upgrade(database.engine)
    return Vault.open(settings, database=database), database


def prepare(data: Path, customers: int, purchases: int, ops: int) -> None:
    """The input files and the vaults the phases start from (run with the code of the checkout that measures them)."""
    from tests.support.people import People, caller, profile_of
    from vault.imports.reader import read_table
    from vault.imports.service import CUSTOMER_FIELDS, ImportService

    people = People(seed=23).many(customers)
    rng = random.Random(5)
    with (data / "customers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("姓名", "手机号码", "邮箱", "会员卡号", "外部编号"))
        for n, p in enumerate(people):
            writer.writerow((p.name, p.mobile, p.email, p.member_id, f"E-{n}"))
            if n % 5 == 0:
                writer.writerow(("", f"+86 {p.mobile[:3]} {p.mobile[3:7]} {p.mobile[7:]}", "", "", f"E-{n}"))
    with (data / "purchases.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("会员卡号", "订单号", "下单时间", "金额", "sku", "数量"))
        for n in range(purchases):
            price = f"{rng.randrange(100, 99999) / 100:.2f}"
            member = people[rng.randrange(len(people))].member_id
            writer.writerow((member, f"O-{n}", f"2026-03-{1 + n % 28:02d} 10:00:00", price, f"SKU-{n % 500}", 1))
    who = caller("bench", "service", "cli:import")
    for name in ("empty", "with-customers", "with-ops"):
        (data / name).mkdir()
        vault, database = _open(data / name)
        if name == "with-customers":
            rows = read_table(data / "customers.csv", {}, CUSTOMER_FIELDS).rows
            ImportService(vault.customers, vault.purchases).customers(who, "crm", rows)
        if name == "with-ops":
            made = [
                vault.customers.create(who, f"b-{n}", profile_of(p)).customer_id
                for n, p in enumerate(People(seed=11).many(ops))
            ]
            (data / "ids.txt").write_text("\n".join(made))
        vault.close()
        database.dispose()


def run_phase(data: Path, phase: str, ops: int) -> None:
    """One phase, in this process (what callgrind counts); ``none`` opens the vault and stops."""
    from tests.support.people import People, caller, profile_of
    from vault.customers.models import IdentifierKind
    from vault.imports.reader import read_table
    from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService

    source = {"import-customers": "empty", "import-purchases": "with-customers", "none-import": "empty"}.get(
        phase, "with-ops"
    )
    people = People(seed=11).many(2 * ops) if source == "with-ops" else []
    work = data / f"work-{os.getpid()}"
    shutil.copytree(data / source, work)
    vault, database = _open(work)
    service = vault.customers
    who = caller("bench", "service", "bench")
    importer = ImportService(service, vault.purchases)
    ids = (data / "ids.txt").read_text().split("\n")
    rng = random.Random(1)
    order = [rng.randrange(ops) for _ in range(ops)]
    if phase == "import-customers":
        importer.customers(who, "crm", read_table(data / "customers.csv", {}, CUSTOMER_FIELDS).rows)
    elif phase == "import-purchases":
        importer.purchases(who, "pos", read_table(data / "purchases.csv", {}, PURCHASE_FIELDS).rows)
    elif phase == "create":
        for n in range(ops, 2 * ops):
            service.create(who, f"c-{n}", profile_of(people[n]))
    elif phase == "read":
        for n in order:
            service.get(who, ids[n])
    elif phase == "find":
        for n in order:
            service.find(who, IdentifierKind.MOBILE, "+86 " + people[n].mobile)
    vault.close()
    database.dispose()
    shutil.rmtree(work)


def _checkout_env(root: Path) -> dict[str, str]:
    """This script runs as a file in a process whose imports come from ``root`` (a revision without this module can
    be measured too): its packages first on the path, ahead of the virtualenv's editable install of the working tree."""
    # A fixed hash seed: set and dict orders, and so the instructions spent on them, are the same in every run.
    return {**os.environ, "PYTHONPATH": os.pathsep.join((str(root), str(root / "clients"))), "PYTHONHASHSEED": "0"}


def _instructions(root: Path, data: Path, phase: str, ops: int) -> int:
    env = _checkout_env(root)
    command = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--ops", str(ops)]
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count for {phase}: {done.stderr[-500:]}")
    return int(found.group(1))


def prepare_in(root: Path, data: Path, args: argparse.Namespace) -> None:
    data.mkdir()
    sizes = ["--customers", str(args.customers), "--purchases", str(args.purchases), "--ops", str(args.ops)]
    command = [sys.executable, __file__, "--prepare", "--data", str(data), *sizes]
    subprocess.run(command, cwd=root, env=_checkout_env(root), check=True)


def per_operation(counts: dict[str, int], args: argparse.Namespace) -> dict[str, float]:
    """Each phase's count less its idle process's, per row or operation."""
    rows = {"import-customers": args.customers + (args.customers + 4) // 5, "import-purchases": args.purchases}
    return {
        phase: (counts[phase] - counts["none-import" if phase.startswith("import") else "none"])
        / rows.get(phase, args.ops)
        for phase in PHASES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="the revision to compare the working tree with")
    parser.add_argument("--customers", type=int, default=600, help="people in the customer import")
    parser.add_argument("--purchases", type=int, default=3000, help="rows in the purchase import")
    parser.add_argument("--ops", type=int, default=600, help="creates, reads and finds each")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data, args.customers, args.purchases, args.ops)
        return
    if args.phase:
        run_phase(args.data, args.phase, args.ops)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench.instructions needs valgrind (apt install valgrind)")
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="piivault-instructions-") as directory:
        scratch = Path(directory)
        base = scratch / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=here, check=True)
        try:
            roots = {"before": base, "after": here}
            for label, root in roots.items():
                prepare_in(root, scratch / label, args)
            jobs = [(label, phase) for label in roots for phase in ("none", "none-import", *PHASES)]
            # Counts do not depend on what else runs, so the processes share the machine's cores.
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                counted = pool.map(lambda job: _instructions(roots[job[0]], scratch / job[0], job[1], args.ops), jobs)
                counts = dict(zip(jobs, counted, strict=True))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=here, check=True)
    before, after = (per_operation({p: n for (lb, p), n in counts.items() if lb == label}, args) for label in roots)
    print(f"instructions per row or operation (callgrind), {args.base} → working tree:")
    print(f"{'phase':<20}{'before':>14}{'after':>14}{'after ÷ before':>16}")
    for phase in PHASES:
        print(f"{phase:<20}{before[phase]:>14,.0f}{after[phase]:>14,.0f}{after[phase] / before[phase]:>16.3f}")


if __name__ == "__main__":
    main()
