"""``bench.run.process_tree_cpu``: the CPU of a process and its running descendants, read from /proc, which the
benchmark's CPU-per-call table is built on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.run import process_tree_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# A child that burns about half a CPU second, then waits to be killed (so that it is still running when measured).
_BURN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(60)"


def test_counts_descendants_and_only_them() -> None:
    # sh -> python: the burning process is a grandchild of the measured one.
    parent = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "$0"; :', _BURN])
    try:
        deadline = time.monotonic() + 30
        total = process_tree_cpu(parent.pid)
        while (total or 0.0) < 0.45 and time.monotonic() < deadline:
            time.sleep(0.05)
            total = process_tree_cpu(parent.pid)
        assert total is not None
        assert 0.45 <= total < 1.5  # the burn and two process start-ups; this test process is not in that tree
        # From this process down: its own CPU and the grandchild's burn.
        own = os.times()
        mine = process_tree_cpu(os.getpid())
        assert mine is not None
        assert mine >= own.user + own.system + 0.4
    finally:
        # The grandchild first: once sh is gone it is re-parented and pkill -P could no longer find it.
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


def test_no_such_process_is_none() -> None:
    assert process_tree_cpu(2**22 + 12345) is None  # above Linux's largest pid
