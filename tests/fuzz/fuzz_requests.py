"""The atheris target: fuzzed requests for every RPC, through the call guard, the servicers and the domain validation.

    python -m tests.fuzz.fuzz_requests [--via direct|grpc] [--stats FILE] [--workdir DIR] [libFuzzer flags...]

``--via grpc`` serves the vault on a loopback port and calls it with raw bytes, exactly as a client would;
``--via direct`` (the default, about twice as fast) calls the handlers that server registers, in process. Each input
picks an RPC, a role allowed to call it and a mode (``tests.fuzz.messages``); ``tests.fuzz.harness`` has the oracle.
A failure stops the campaign like a crash: atheris prints the traceback and writes the input to ``crash-*`` under
``-artifact_prefix``. ``--stats`` receives a JSON summary (executions, failures, status codes per RPC, executions per
second) every 10,000 inputs or minute, on a failure, and after the last input of a ``-runs=N`` campaign.

Only the product is instrumented for coverage (``vault``, ``consent``, ``audit``), less ``EXCLUDED``; grpc, protobuf
and SQLAlchemy are not.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]

# Modules left uninstrumented (atheris matches these names exactly, not as prefixes). The first group builds SQLAlchemy
# expressions with comparison operators (``table.c.seq > after``): atheris traces every comparison in instrumented code
# and keeps each non-boolean result alive, which grew the fuzz process by ~20 KB per input (2 GB after 100,000). The
# second is plumbing whose branches no request steers. Validation, servicers, services and the guard stay instrumented.
EXCLUDED = [
    "audit.log",
    "audit.queries",
    "audit.verify",
    "consent.repository",
    "vault.auth.certificates",
    "vault.auth.tokens",
    "vault.customers.erasure",
    "vault.customers.repository",
    "vault.dsar.repository",
    "vault.dsar.retention",
    "vault.keys.rotation",
    "vault.purchases.repository",
    "vault.crypto",
    "vault.storage.db",
    "vault.storage.group_commit",
    "vault.storage.migrate",
    "vault.storage.models",
    "vault.keys.local",
    "vault.keys.data_keys",
    "vault.keys.dek_cache",
    "vault.keys.service_keys",
]

with atheris.instrument_imports(include=["vault", "consent", "audit"], exclude=EXCLUDED):
    from tests.fuzz.harness import World

REPORT_EVERY = 10_000  # inputs
REPORT_SECONDS = 60.0


class Campaign:
    """Runs inputs against a world, and replaces the world with a fresh vault every ``recycle_every`` inputs.

    Recycling keeps every input's cost bounded: VerifyChain walks the whole audit chain and the exports walk every
    purchase, so a vault grown through a million refused calls would make the later inputs ever slower.
    """

    def __init__(self, options: argparse.Namespace, runs: int) -> None:
        self.options = options
        self.runs = runs
        self.owned = options.workdir is None
        self.workdir: Path = options.workdir or Path(tempfile.mkdtemp(prefix="piivault-fuzz-"))
        self.generation = 0
        self.world = self._new_world()
        self.outcomes: dict[str, int] = {}
        self.executions = 0
        self.failures = 0
        self.failure = ""
        self.started = self.reported = time.monotonic()
        self.rng = random.Random(1)

    def _home(self) -> Path:
        return self.workdir / f"vault-{self.generation}"

    def _new_world(self) -> World:
        self.generation += 1
        self._home().mkdir(parents=True)
        return World(self._home(), self.options.via)

    def _retire_world(self) -> None:
        self._merge_outcomes()
        self.world.close()
        shutil.rmtree(self._home(), ignore_errors=True)

    def _merge_outcomes(self) -> None:
        for key, count in self.world.outcomes.items():
            self.outcomes[key] = self.outcomes.get(key, 0) + count
        self.world.outcomes.clear()

    def one_input(self, data: bytes) -> None:
        self.executions += 1
        if self.executions % self.options.recycle_every == 0:
            self._retire_world()
            self.world = self._new_world()
        elif self.executions % self.options.replenish_every == 0:
            self.world.replenish(self.rng)
        provider: Any = atheris.FuzzedDataProvider(data)

        def take(count: int) -> bytes:
            return bytes(provider.ConsumeBytes(provider.remaining_bytes() if count < 0 else count))

        try:
            self.world.one_input(provider.ConsumeIntInRange, take)
        except BaseException as error:
            self.failures += 1
            self.failure = f"{type(error).__name__}: {error}"
            self.finish()
            raise
        if self.executions == self.runs:
            self.finish()  # libFuzzer ends the process with exit() after the last run, past any Python clean-up
        elif self.executions % REPORT_EVERY == 0 or time.monotonic() - self.reported > REPORT_SECONDS:
            self.write_stats()

    def finish(self) -> None:
        self.write_stats()
        self._retire_world()
        if self.owned:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def write_stats(self) -> None:
        stats: Path | None = self.options.stats
        if stats is None:
            return
        self._merge_outcomes()
        self.reported = time.monotonic()
        seconds = self.reported - self.started
        summary = {
            "via": self.options.via,
            "executions": self.executions,
            "failures": self.failures,
            "failure": self.failure,
            "seconds": round(seconds, 1),
            "executions_per_second": round(self.executions / seconds, 1) if seconds else 0.0,
            "vaults": self.generation,
            "outcomes": dict(sorted(self.outcomes.items())),
        }
        partial = stats.with_suffix(".partial")
        partial.write_text(json.dumps(summary, indent=1))
        partial.replace(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--via", choices=("direct", "grpc"), default="direct")
    parser.add_argument("--stats", type=Path, help="write a JSON summary here")
    parser.add_argument("--workdir", type=Path, help="where the vaults live (default: a temporary directory)")
    parser.add_argument("--replenish-every", type=int, default=5_000, help="new live customers every N inputs")
    parser.add_argument("--recycle-every", type=int, default=20_000, help="a fresh vault every N inputs")
    options, libfuzzer = parser.parse_known_args()
    runs = next((int(arg.split("=", 1)[1]) for arg in libfuzzer if arg.startswith("-runs=")), 0)
    campaign = Campaign(options, runs)
    atheris.Setup([sys.argv[0], *libfuzzer], campaign.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
