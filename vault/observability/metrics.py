"""Prometheus metrics: what piivault counts, and the HTTP endpoint that exposes them (``PIIVAULT_METRICS_LISTEN``).

Every label value comes from a closed set fixed by the code — RPC names the server registered, gRPC status code
names, Vault operation names, outcome words — never from a request: no customer id, request id, principal, token or
personal value can become a label, and a client cannot grow the number of series (an unregistered method is counted
as ``unknown``).

The metric objects live at module level, as ``prometheus_client`` intends: they hold counts, never settings or keys,
and the hooks in the key provider, DEK cache, group commit and imports record into them without a collaborator being
threaded through every constructor. Recording costs well under a microsecond per event with one process.

With ``PIIVAULT_PROCESSES`` > 1 the workers share one port, so the parent process serves the endpoint and uses
``prometheus_client``'s multiprocess mode: before it spawns the workers it points ``PROMETHEUS_MULTIPROC_DIR`` at a
private directory, each worker writes its values to memory-mapped files there, and a scrape sums them. The directory
is removed at shutdown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

from vault.config import ConfigError, host_and_port
from vault.crypto import CryptoError
from vault.keys.provider import ProviderUnavailable

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN_METHOD = "unknown"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter(
    "piivault_rpc_requests",
    "RPCs handled, by service, full method name and gRPC status code name",
    ("service", "method", "code"),
)
RPC_DURATION = Histogram(
    "piivault_rpc_duration_seconds",
    "Time from the call reaching the server's handler to its last response, by service and full method name",
    ("service", "method"),
    buckets=_LATENCY_BUCKETS,
)
VAULT_CALLS = Counter(
    "piivault_vault_transit_calls",
    "Calls to HashiCorp Vault Transit (retries included in one call), by operation and outcome "
    "(ok, rejected: a wrapped key failed authentication, unavailable, error)",
    ("operation", "outcome"),
)
VAULT_DURATION = Histogram(
    "piivault_vault_transit_call_duration_seconds",
    "Duration of calls to HashiCorp Vault Transit, retries included, by operation",
    ("operation",),
    buckets=_LATENCY_BUCKETS,
)
DEK_CACHE_LOOKUPS = Counter(
    "piivault_dek_cache_lookups",
    "Lookups of unwrapped data keys in the in-memory DEK cache, by result (hit, miss)",
    ("result",),
)
DEK_CACHE_HITS = DEK_CACHE_LOOKUPS.labels(result="hit")
DEK_CACHE_MISSES = DEK_CACHE_LOOKUPS.labels(result="miss")
GROUP_COMMIT_SIZE = Histogram(
    "piivault_group_commit_size",
    "Write requests (each with its audit events) committed together in one group transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
IMPORT_ROWS = Counter(
    "piivault_import_rows",
    "Rows of customer and purchase imports, by kind (customers, purchases) and outcome "
    "(created, merged, unchanged, recorded, rejected)",
    ("kind", "outcome"),
)
IMPORT_OUTCOMES = frozenset({"created", "merged", "unchanged", "recorded", "rejected"})


@contextmanager
def vault_call(operation: str) -> Iterator[None]:
    """Count and time one Vault Transit call; ``operation`` is one of the provider's fixed operation names."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except CryptoError:
        outcome = "rejected"
        raise
    except ProviderUnavailable:
        outcome = "unavailable"
        raise
    finally:
        VAULT_CALLS.labels(operation=operation, outcome=outcome).inc()
        VAULT_DURATION.labels(operation=operation).observe(time.perf_counter() - started)


def count_import_rows(kind: str, outcomes: Iterable[str]) -> None:
    """Count an import's rows by outcome (an outcome outside the fixed set is counted as ``other``)."""
    for outcome, rows in Tally(outcomes).items():
        IMPORT_ROWS.labels(kind=kind, outcome=outcome if outcome in IMPORT_OUTCOMES else "other").inc(rows)


@dataclass
class RpcCounters:
    """The counter and histogram children of each (method, code), resolved once: ``labels()`` takes a lock and
    builds a key on every call, which the request path need not pay."""

    _requests: dict[tuple[str, str], Any] = field(default_factory=dict)
    _durations: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, code: str, seconds: float) -> None:
        """``method`` is a registered full method name (``/package.Service/Method``) or ``UNKNOWN_METHOD``."""
        requests = self._requests.get((method, code))
        duration = self._durations.get(method)
        if requests is None or duration is None:
            service = method.rsplit("/", 1)[0].lstrip("/") if method != UNKNOWN_METHOD else UNKNOWN_METHOD
            with self._lock:
                requests = self._requests.setdefault(
                    (method, code), RPC_REQUESTS.labels(service=service, method=method, code=code)
                )
                duration = self._durations.setdefault(method, RPC_DURATION.labels(service=service, method=method))
        requests.inc()
        duration.observe(seconds)


@dataclass
class MetricsEndpoint:
    """The HTTP server behind ``/metrics``; ``stop()`` closes it (and removes the multiprocess directory, if any)."""

    server: WSGIServer
    thread: threading.Thread
    directory: Path | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        if self.directory is not None:
            if os.environ.get(MULTIPROCESS_ENV) == str(self.directory):
                del os.environ[MULTIPROCESS_ENV]
            shutil.rmtree(self.directory, ignore_errors=True)


def start_endpoint(listen: str) -> MetricsEndpoint:
    """Serve this process's metrics (plus the client library's process and Python collectors) on ``listen``."""
    return _serve(listen, REGISTRY)


def start_multiprocess_endpoint(listen: str) -> MetricsEndpoint:
    """Serve the sum of every worker's metrics. Call before spawning the workers: it sets ``PROMETHEUS_MULTIPROC_DIR``
    in this process's environment, which the spawned workers inherit and read when they import the client library.
    """
    directory = Path(tempfile.mkdtemp(prefix="piivault-metrics-"))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    try:
        endpoint = _serve(listen, registry)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    endpoint.directory = directory
    os.environ[MULTIPROCESS_ENV] = str(directory)
    return endpoint


def _serve(listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
    host, port = host_and_port(listen, "PIIVAULT_METRICS_LISTEN")
    try:
        server, thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    except OSError:
        raise ConfigError("PIIVAULT_METRICS_LISTEN cannot be bound (address in use or not local)") from None
    return MetricsEndpoint(server, thread)
