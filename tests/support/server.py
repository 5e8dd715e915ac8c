"""Run ``piivault serve`` as a real subprocess (for e2e tests and the benchmark)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PIIVAULT = Path(sys.executable).parent / "piivault"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([str(PIIVAULT), *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"piivault {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


class ServerProcess:
    """``piivault serve`` on a free loopback port, migrated, with a service token; logs go to ``log_path``."""

    def __init__(
        self, data_dir: Path, extra_env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.command = command or [str(PIIVAULT), "serve"]
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.env = {
            **os.environ,
            "PIIVAULT_DATA_DIR": str(data_dir / "var"),
            "PIIVAULT_LISTEN": self.address,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        run_cli(["migrate"], self.env)
        if not self.token:
            self.token = run_cli(
                ["token", "create", "--principal", "test-service", "--role", "service"], self.env
            ).strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)
        log.close()
        self.wait_serving()

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"server exited early: {self.log_path.read_text()[-2000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError("server did not report SERVING")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)
