"""The benchmarks must keep working: run each with tiny counts and check it prints every figure (no timing asserted).

The CustomerService benchmark scrapes the server's metrics endpoint around each phase: the server's request counts
must equal the benchmark's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "labels"),
    [
        (
            # --overhead-pairs 0: measuring the metrics overhead restarts the server twice more; `make bench` does it
            ["bench.run", "--creates", "40", "--reads", "40", "--concurrency", "4", "--overhead-pairs", "0"],
            (
                "grpc create",
                "grpc read",
                "grpc find",
                "in-process create",
                "in-process read",
                "cost ratio",
                "grpc health check",
                "share of the no-op ceiling",
                "requests counted by the benchmark and by the server",
                "metrics overhead",
                "CPU per call",
                "best case on this machine now",
            ),
        ),
        (
            ["bench.dsar", "--purchases", "30", "--reads", "20", "--consents", "4"],
            ("manifest verified", "erasure with signed receipt"),
        ),
        (["bench.imports", "--customers", "30", "--purchases", "60"], ("customer rows", "per CPU second")),
        (["bench.lookup_timing", "--customers", "10", "--lookups", "60"], ("KS D=", "hit median")),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_bench_runs_and_prints_every_figure(command: list[str], labels: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for label in labels:
        assert label in done.stdout
    if command[0] == "bench.run":
        counted = re.findall(r"^  (grpc [a-z() ]+?) +(\d+) +(\d+)  (match|MISMATCH)$", done.stdout, re.MULTILINE)
        assert [name for name, *_ in counted] == ["grpc create", "grpc read", "grpc find (mobile)"], done.stdout
        assert all(ours == theirs == "40" for _, ours, theirs, _ in counted), done.stdout
