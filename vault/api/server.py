"""The gRPC server: CustomerService behind the call guard, plus standard health and reflection services."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import structlog
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import text

from audit.queries import AuditQueries
from piivault.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    customers_pb2,
    customers_pb2_grpc,
    dsar_pb2,
    dsar_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    purchases_pb2,
    purchases_pb2_grpc,
)
from vault import logs
from vault.api.audit import AuditServicer
from vault.api.consent import ConsentServicer
from vault.api.customers import CustomerServicer
from vault.api.dsar import DsarServicer
from vault.api.guard import CallGuard
from vault.api.keys import KeyServicer
from vault.api.purchases import AnalyticsServicer, PurchaseServicer
from vault.api.telemetry import RoleTagger, RpcTelemetry
from vault.app import Vault
from vault.config import ConfigError, Settings, check_tls
from vault.observability import metrics, tracing
from vault.storage.db import Database, answering_within

_log = structlog.get_logger("piivault.server")
SERVICE_NAMES = (
    customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name,
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    dsar_pb2.DESCRIPTOR.services_by_name["DsarService"].full_name,
    purchases_pb2.DESCRIPTOR.services_by_name["PurchaseService"].full_name,
    analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


HEALTH_PROBE_SECONDS = 1.0  # how often the health service re-checks the database


class _DatabaseWatch:
    """Keeps the health service honest: NOT_SERVING while the database does not answer, SERVING again once it does,
    so that a load balancer or probe stops sending calls that could only fail. (A Vault outage does not count: cached
    data keys keep serving reads, and calls that need Vault fail fast with UNAVAILABLE.)"""

    def __init__(self, database: Database, servicer: health.HealthServicer, interval: float) -> None:
        self._database = database
        self._servicer = servicer
        self._interval = interval
        self._stopping = threading.Event()
        self._serving = True
        self._thread = threading.Thread(target=self._run, name="health-database", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            answering = self._probe()
            if answering == self._serving:
                continue
            self._serving = answering
            status = health_pb2.HealthCheckResponse.SERVING if answering else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", *SERVICE_NAMES):
                self._servicer.set(name, status)  # ignored once a graceful shutdown began
            if answering:
                _log.info("health.database_answering")
            else:
                _log.warning("health.database_unreachable")

    def _probe(self) -> bool:
        try:
            with answering_within(self._interval * 2), self._database.read() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure to answer means the database cannot serve calls now
            return False
        return True


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    metrics: metrics.MetricsEndpoint | None = None
    watch: _DatabaseWatch | None = None

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to ``grace`` seconds, then stop (the metrics
        endpoint last, so that a final scrape still sees the calls that drained)."""
        if self.watch is not None:
            self.watch.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()


def start_server(
    vault: Vault, listen: str | None = None, *, reuse_port: bool = False, serve_metrics: bool = True
) -> RunningServer:
    """``serve_metrics``: open the PIIVAULT_METRICS_LISTEN endpoint here (False in a worker process, whose parent
    serves the sum of all workers' metrics)."""
    settings = vault.settings
    credentials = server_credentials(settings)  # first: a TLS file that cannot be used stops start-up at once
    limit = settings.max_receive_bytes
    interceptors: list[Any] = [CallGuard(vault.tokens, vault.audit, vault.certificates)]
    if settings.metrics_listen or tracing.active():  # outermost, to see every call and its final status
        interceptors.insert(0, RpcTelemetry(metrics.RpcCounters() if settings.metrics_listen else None))
    if tracing.active():
        interceptors.append(RoleTagger())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
            # Off unless asked for: two unrelated servers must not silently share a port.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
        maximum_concurrent_rpcs=settings.workers * 64,
    )
    customers_pb2_grpc.add_CustomerServiceServicer_to_server(
        CustomerServicer(vault.customers, vault.imports, vault.identity), server
    )
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(vault.consents), server)
    dsar_pb2_grpc.add_DsarServiceServicer_to_server(DsarServicer(vault.dsar), server)
    purchases_pb2_grpc.add_PurchaseServiceServicer_to_server(PurchaseServicer(vault.purchases), server)
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsServicer(vault.analytics), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(vault.keys, vault.audit), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditServicer(AuditQueries(vault.database), vault.audit_verifier, vault.audit), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if credentials is None:
        port = server.add_insecure_port(listen or settings.listen)
    else:
        try:
            port = server.add_secure_port(listen or settings.listen, credentials)
        except RuntimeError:  # grpc says only "failed to bind"; the usual cause is a key for another certificate
            raise ConfigError(
                "could not open the TLS port: PIIVAULT_TLS_KEY does not match PIIVAULT_TLS_CERT, "
                "or PIIVAULT_LISTEN cannot be bound"
            ) from None
    if port == 0:
        raise OSError("could not bind the listen address")
    endpoint = None
    if settings.metrics_listen and serve_metrics:
        try:
            endpoint = metrics.start_endpoint(settings.metrics_listen)
        except ConfigError:
            server.stop(None)
            raise
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    watch = _DatabaseWatch(vault.database, health_servicer, HEALTH_PROBE_SECONDS)
    watch.start()
    return RunningServer(server, health_servicer, port, endpoint, watch)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files the settings name, or ``None`` for plaintext (no PIIVAULT_TLS_CERT).

    Every problem is a ``ConfigError`` naming the variable; file contents never appear in a message.
    """
    check_tls(settings)
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    chain = _read_pem(settings.tls_cert, "PIIVAULT_TLS_CERT")
    _require_certificates(chain, "PIIVAULT_TLS_CERT")
    key = _read_pem(settings.tls_key, "PIIVAULT_TLS_KEY")
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError("PIIVAULT_TLS_KEY must name a PEM file holding a private key")
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = _read_pem(settings.tls_client_ca, "PIIVAULT_TLS_CLIENT_CA")
        _require_certificates(client_ca, "PIIVAULT_TLS_CLIENT_CA")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=settings.tls_require_client_cert
    )


def _read_pem(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise ConfigError(f"{variable} names a file that cannot be read") from None


def _require_certificates(pem: bytes, variable: str) -> None:
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{variable} must name a PEM file of one or more X.509 certificates") from None


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    With ``processes`` > 1 the server runs that many worker processes on one port (SO_REUSEPORT; the kernel spreads
    connections). Python's GIL keeps one process to about one core, and the service is stateless apart from caches,
    so processes scale it the way replicas do. The parent opens the vault once first, so configuration, schema and
    keyring errors are reported before any worker starts.
    """
    Vault.open(settings).close()
    server_credentials(settings)  # unreadable TLS files stop the parent, before any worker starts
    tracing.check(settings)
    if settings.processes == 1:
        _serve_one(settings, reuse_port=False)
        return
    # One metrics endpoint for all workers, in the parent: it must exist before they are spawned (see metrics).
    endpoint = metrics.start_multiprocess_endpoint(settings.metrics_listen) if settings.metrics_listen else None
    _announce_metrics(settings, endpoint)
    try:
        _run_workers(settings)
    finally:
        if endpoint is not None:
            endpoint.stop()


def _run_workers(settings: Settings) -> None:
    context = multiprocessing.get_context("spawn")  # fork after grpc has started threads is unsafe
    workers = [
        context.Process(target=_serve_one, args=(settings, True, n == 0, False), name=f"piivault-{n}")
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


def _announce_metrics(settings: Settings, endpoint: metrics.MetricsEndpoint | None) -> None:
    if endpoint is not None:
        _log.info("metrics.started", listen=f"{settings.metrics_listen.rpartition(':')[0]}:{endpoint.port}")


def _retention_loop(vault: Vault, interval: float, stopping: threading.Event) -> None:
    """The in-process retention schedule (one process per server; a second replica running it too is harmless, since
    every step is idempotent)."""
    while not stopping.wait(interval):
        try:
            plan = vault.retention.run()
        except Exception as error:  # noqa: BLE001 - the schedule must survive a failed run; the next one retries
            _log.error("retention.failed", error_type=type(error).__name__)
            continue
        _log.info("retention.run", erased=len(plan.erase), blocked=len(plan.blocked), lapsed=len(plan.lapse))


def _stop_event() -> threading.Event:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _log.info("server.stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping


def _serve_one(settings: Settings, reuse_port: bool, schedule: bool = True, serve_metrics: bool = True) -> None:
    logs.configure(settings.log_level)
    vault = Vault.open(settings)
    tracing.configure(settings)
    running = start_server(vault, reuse_port=reuse_port, serve_metrics=serve_metrics)
    stopping = _stop_event()
    if schedule and settings.retention_interval_hours > 0:
        threading.Thread(
            target=_retention_loop, args=(vault, settings.retention_interval_hours * 3600, stopping), daemon=True
        ).start()
    _log.info("server.started", listen=settings.listen, key_provider=vault.provider.name, workers=settings.workers)
    _announce_metrics(settings, running.metrics)
    # With a timeout: Python runs signal handlers in the main thread only, and a SIGTERM the kernel hands to one of
    # grpc's threads does not interrupt a wait without one — the worker then never stops (seen under load).
    while not stopping.wait(1.0):
        pass
    running.stop(settings.shutdown_grace_seconds)
    tracing.shutdown()
    vault.close()
    _log.info("server.stopped")
