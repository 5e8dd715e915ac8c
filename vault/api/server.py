"""The gRPC server: CustomerService behind the call guard, plus standard health and reflection services."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from audit.queries import AuditQueries
from piivault.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
)
from vault import logs
from vault.api.audit import AuditServicer
from vault.api.consent import ConsentServicer
from vault.api.customers import CustomerServicer
from vault.api.guard import CallGuard
from vault.api.keys import KeyServicer
from vault.app import Vault
from vault.config import Settings

_log = structlog.get_logger("piivault.server")
SERVICE_NAMES = (
    customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def start_server(vault: Vault, listen: str | None = None, *, reuse_port: bool = False) -> RunningServer:
    settings = vault.settings
    limit = settings.max_receive_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=[CallGuard(vault.tokens, vault.audit)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
            # Off unless asked for: two unrelated servers must not silently share a port.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
        maximum_concurrent_rpcs=settings.workers * 64,
    )
    customers_pb2_grpc.add_CustomerServiceServicer_to_server(CustomerServicer(vault.customers), server)
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(vault.consents), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(vault.keys, vault.audit), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(AuditQueries(vault.database), vault.audit_verifier, vault.audit), server
    )
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


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    With ``processes`` > 1 the server runs that many worker processes on one port (SO_REUSEPORT; the kernel spreads
    connections). Python's GIL keeps one process to about one core, and the service is stateless apart from caches,
    so processes scale it the way replicas do. The parent opens the vault once first, so configuration, schema and
    keyring errors are reported before any worker starts.
    """
    Vault.open(settings).close()
    if settings.processes == 1:
        _serve_one(settings, reuse_port=False)
        return
    context = multiprocessing.get_context("spawn")  # fork after grpc has started threads is unsafe
    workers = [
        context.Process(target=_serve_one, args=(settings, True), name=f"piivault-{n}")
        for n in range(settings.processes)
    ]
    for worker in workers:
        worker.start()
    stopping = _stop_event()
    while not stopping.wait(1.0):
        if any(not worker.is_alive() for worker in workers):
            _log.error("server.worker_exited")
            break
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(settings.shutdown_grace_seconds + 5)


def _stop_event() -> threading.Event:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _log.info("server.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def _serve_one(settings: Settings, reuse_port: bool) -> None:
    logs.configure(settings.log_level)
    vault = Vault.open(settings)
    running = start_server(vault, reuse_port=reuse_port)
    stopping = _stop_event()
    _log.info("server.started", listen=settings.listen, key_provider=vault.provider.name, workers=settings.workers)
    stopping.wait()
    running.stop(settings.shutdown_grace_seconds)
    vault.close()
    _log.info("server.stopped")
