"""The server under crash test: ``piivault serve`` processes forked from a warmed-up "zygote", killed by pidfd.

Used by the crash-safety harness (``tests.support.crash``), whose rounds each end in a SIGKILL and a restart.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.server import ServerProcess, run_cli

# The default reconnect back-off (1 s, growing) would leave a channel idle long after the restarted server listens.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
)
# Servers are forked from a process that has imported everything ``piivault serve`` imports (and nothing more: it
# opens no database and starts no thread or gRPC object), so a restart costs what the server's own start-up costs, not
# a second of imports per round. Each child runs the very function ``piivault serve`` runs, opens the database fresh
# and recovers it; it is killed by PR_SET_PDEATHSIG if this "zygote" dies (it exits when the harness closes its stdin).
_ZYGOTE = """\
import ctypes, os, signal, sys, traceback
from piivault.cli.main import serve
import vault.api.server
import sqlalchemy.orm
sqlalchemy.orm.configure_mappers()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        log = os.open(line.strip(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = 0
        try:
            serve()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(pid, flush=True)
"""


class CrashableServer:
    """``piivault serve`` for a ``ServerProcess``'s configuration, started by forking the zygote, killed by pidfd."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self._zygote: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None

    def start(self) -> None:
        run_cli(["migrate"], self.server.env)
        self.server.token = run_cli(
            ["token", "create", "--principal", "crash-harness", "--role", "service"], self.server.env
        ).strip()
        self.server.data_dir.mkdir(parents=True, exist_ok=True)
        with self.server.log_path.open("ab") as log:
            command = [sys.executable, "-c", _ZYGOTE]
            pipe = subprocess.PIPE
            self._zygote = subprocess.Popen(command, env=self.server.env, stdin=pipe, stdout=pipe, stderr=log)
        self.restart()

    def restart(self) -> None:
        """Start a server process (it opens and recovers the database only now) and wait until it serves."""
        zygote = self._zygote
        assert zygote is not None and zygote.stdin is not None and zygote.stdout is not None and self._pidfd is None
        zygote.stdin.write(f"{self.server.log_path}\n".encode())
        zygote.stdin.flush()
        pid = zygote.stdout.readline()
        if not pid:
            raise RuntimeError(f"the server zygote exited with {zygote.wait()}")
        self._pidfd = os.pidfd_open(int(pid))
        wait_serving(self.server.address, self.alive)

    def alive(self) -> bool:
        return self._pidfd is not None and not select.select([self._pidfd], [], [], 0)[0]

    def kill(self) -> None:
        self._stop(signal.SIGKILL)

    def _stop(self, sig: int, timeout: float = 30.0) -> None:
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is None:
            return
        try:
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
                if not select.select([pidfd], [], [], timeout)[0]:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)

    def close(self) -> None:
        self._stop(signal.SIGTERM)
        if self._zygote is not None and self._zygote.stdin is not None:
            self._zygote.stdin.close()  # end of input: the zygote exits
            self._zygote.wait(30)


def wait_serving(address: str, alive: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    serving = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(address, options=FAST_RECONNECT) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the restarted server exited; see its log")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == serving:
                    return
            except grpc.RpcError:
                time.sleep(0.02)
    raise TimeoutError("the restarted server did not report SERVING")
