"""Observability: Prometheus metrics (``metrics``) and OpenTelemetry tracing (``tracing``), both free of PII.

Neither module imports gRPC: the RPC interceptor that feeds them lives in ``vault.api.telemetry``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.trace import SpanKind

from vault.observability import metrics, tracing


@contextmanager
def vault_call(operation: str) -> Iterator[None]:
    """Count, time and trace one Vault Transit call (``operation`` is a fixed name such as ``encrypt``)."""
    attributes = {"vault.operation": operation}
    with metrics.vault_call(operation), tracing.span(f"vault transit {operation}", attributes, SpanKind.CLIENT):
        yield
