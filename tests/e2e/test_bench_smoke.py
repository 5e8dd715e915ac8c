"""The benchmark must keep working: run it with tiny counts and check it prints every figure (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_and_prints_every_operation() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--creates", "40", "--reads", "40", "--concurrency", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for label in ("grpc create", "grpc read", "grpc find", "in-process create", "in-process read", "cost ratio"):
        assert label in done.stdout


def test_dsar_bench_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.dsar", "--purchases", "30", "--reads", "20", "--consents", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "manifest verified" in done.stdout and "erasure with signed receipt" in done.stdout


def test_import_bench_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.imports", "--customers", "30", "--purchases", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "customer rows" in done.stdout and "purchase rows" in done.stdout


def test_lookup_timing_bench_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.lookup_timing", "--customers", "10", "--lookups", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KS D=" in done.stdout and "hit median" in done.stdout
