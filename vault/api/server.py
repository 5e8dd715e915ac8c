"""The gRPC server: CustomerService behind the call guard, plus standard health and reflection services."""

from __future__ import annotations

import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from piivault.v1 import customers_pb2, customers_pb2_grpc
from vault.api.customers import CustomerServicer
from vault.api.guard import CallGuard
from vault.app import Vault

_log = structlog.get_logger("piivault.server")
SERVICE_NAMES = (customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,)


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def start_server(vault: Vault, listen: str | None = None) -> RunningServer:
    settings = vault.settings
    limit = settings.max_receive_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=[CallGuard(vault.tokens)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.workers * 64,
    )
    customers_pb2_grpc.add_CustomerServiceServicer_to_server(CustomerServicer(vault.customers), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(listen or settings.listen)
    if port == 0:
        raise OSError("could not bind the listen address")
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, port)


def serve(vault: Vault) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = start_server(vault)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _log.info("server.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _log.info(
        "server.started", listen=vault.settings.listen, key_provider=vault.provider.name, workers=vault.settings.workers
    )
    stopping.wait()
    running.stop(vault.settings.shutdown_grace_seconds)
    vault.close()
    _log.info("server.stopped")
