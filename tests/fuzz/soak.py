"""Fuzz campaigns as subprocesses: the short one ``make test`` runs, and the soak (``make soak``).

    python -m tests.fuzz.soak --direct 600000 --grpc 400000 [--out DIR]

Runs one atheris process per target (``--via direct`` and ``--via grpc``) side by side, each for exactly the given
number of inputs, then prints one line per target and a total, and exits non-zero on any failure or shortfall. The
logs, the JSON summaries and any crashing input (``crash-*``) stay in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    via: str
    runs: int  # asked for
    returncode: int
    executions: int
    failures: int
    failure: str
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failures == 0 and self.executions == self.runs


def start(via: str, runs: int, out: Path, timeout_per_input: int = 120) -> tuple[subprocess.Popen[bytes], Path]:
    log = out / f"{via}.log"
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.fuzz_requests",
        f"--via={via}",
        f"--stats={out / f'{via}.json'}",
        f"--workdir={out / f'{via}-vaults'}",
        f"-runs={runs}",
        f"-timeout={timeout_per_input}",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={out}/{via}-",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    return process, log


def run(campaigns: dict[str, int], out: Path, timeout: float | None = None) -> list[Result]:
    """Run the campaigns side by side; ``timeout`` (seconds) bounds the whole run."""
    out.mkdir(parents=True, exist_ok=True)
    started = {via: start(via, runs, out) for via, runs in campaigns.items() if runs > 0}
    deadline = None if timeout is None else time.monotonic() + timeout
    results: list[Result] = []
    for via, (process, log) in started.items():
        try:
            code = process.wait(None if deadline is None else max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        stats_file = out / f"{via}.json"
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        results.append(
            Result(
                via=via,
                runs=campaigns[via],
                returncode=code,
                executions=int(stats.get("executions", 0)),
                failures=int(stats.get("failures", 0)),
                failure=str(stats.get("failure", "")),
                seconds=float(stats.get("seconds", 0.0)),
                log=log,
            )
        )
    return results


def describe(result: Result) -> str:
    rate = result.executions / result.seconds if result.seconds else 0.0
    verdict = "ok" if result.ok else f"FAILED (exit {result.returncode}) {result.failure}"
    return (
        f"{result.via}: {result.executions:,} of {result.runs:,} inputs in {result.seconds:,.0f} s "
        f"({rate:,.0f}/s), {result.failures} failures: {verdict} [{result.log}]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direct", type=int, default=600_000, help="inputs for the in-process target")
    parser.add_argument("--grpc", type=int, default=400_000, help="inputs for the served target")
    parser.add_argument("--out", type=Path, help="logs, summaries and crashing inputs (default: a new temp dir)")
    options = parser.parse_args()
    out = options.out or Path(tempfile.mkdtemp(prefix="piivault-fuzz-soak-"))
    results = run({"direct": options.direct, "grpc": options.grpc}, out)
    for result in results:
        print(describe(result))
    total = sum(result.executions for result in results)
    failed = [result for result in results if not result.ok]
    print(f"fuzz soak: {total:,} executions, {sum(r.failures for r in results)} failures", "FAILED" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
