"""Crash-safety soak: many SIGKILL rounds against a served vault (and PostgreSQL crashes under it), then the figures.

    python -m bench.crash_soak --backend sqlite --rounds 1000        # make soak runs this
    python -m bench.crash_soak --backend postgresql --rounds 100     # a private cluster: half the rounds crash it

Each round loads the server with creates, updates and purchases from several client threads, kills it with SIGKILL
after a random delay (on PostgreSQL every other round stops the database with ``pg_ctl stop -m immediate`` instead,
and starts it again under the running server), retries every unacknowledged write with its id and body, and checks
the database (see ``tests.support.crash``). Prints rounds, acknowledged writes, retries, lost / partial / duplicate
writes (the acceptance bar is zero for each) and time per round; exits non-zero if any problem was found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.support import pg_cluster
from tests.support.crash import CrashHarness, CrashReport
from tests.support.pg_cluster import PrivateCluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="client threads sending writes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-load-seconds", type=float, default=0.5, help="longest load before a crash")
    parser.add_argument("--full-check-every", type=int, default=50, help="check every customer every N rounds")
    parser.add_argument("--verify-every", type=int, default=25, help="verify the audit chain every N rounds")
    args = parser.parse_args()
    if args.backend == "postgresql" and pg_cluster.available() is not None:
        print(f"cannot start a private PostgreSQL cluster: {pg_cluster.available()}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(report: CrashReport) -> None:
        if report.rounds % 50 == 0 or report.problems:
            elapsed = time.monotonic() - started
            acknowledged = sum(report.acknowledged.values())
            print(
                f"  round {report.rounds}: {acknowledged} acknowledged, {report.retried} retried, "
                f"{len(report.problems)} problems, {elapsed:.0f} s",
                flush=True,
            )

    with tempfile.TemporaryDirectory(prefix="piivault-crash-") as scratch, ExitStack() as stack:
        base = Path(scratch)
        cluster = stack.enter_context(PrivateCluster(base / "pg")) if args.backend == "postgresql" else None
        harness = stack.enter_context(
            CrashHarness(
                base / "vault",
                cluster=cluster,
                seed=args.seed,
                clients=args.clients,
                max_load_seconds=args.max_load_seconds,
            )
        )
        report = harness.run(
            args.rounds, full_check_every=args.full_check_every, verify_every=args.verify_every, progress=progress
        )
    print(report.summary())
    print(f"  total {time.monotonic() - started:.0f} s")
    for problem in report.problems[:50]:
        print(f"  round {problem.round}: {problem.kind}: {problem.detail}")
    return 1 if report.problems or report.rounds < args.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
