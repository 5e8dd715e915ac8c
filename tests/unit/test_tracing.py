"""OpenTelemetry tracing: a span per RPC with its database statements and Vault Transit calls as children, the
caller's role and status code on it, no personal data, customer id or request id in any attribute — and nothing at
all installed when no exporter is configured."""

from __future__ import annotations

import importlib.util
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People, customer_message
from tests.support.scan import needles
from tests.transit_server import TransitServer
from vault.api.guard import CallGuard
from vault.api.server import RunningServer, start_server
from vault.api.telemetry import RoleTagger, RpcTelemetry
from vault.app import Vault
from vault.config import ConfigError, Settings
from vault.keys.vault_transit import VaultTransitKeyProvider
from vault.observability import tracing
from vault.storage.db import Database
from vault.storage.migrate import upgrade

SERVICE = "piivault.v1.CustomerService"
PURPOSE = "customer_service"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


@pytest.fixture
def transit_vault(tmp_path: Path, transit_server: TransitServer) -> Iterator[Vault]:
    settings = Settings(data_dir=tmp_path / "var", key_settle_seconds=0)
    database = Database.from_url(f"sqlite:///{tmp_path / 'piivault.db'}")
    upgrade(database.engine)
    provider = VaultTransitKeyProvider.connect(
        transit_server.url, token=transit_server.root_token, key_name="piivault-kek-" + secrets.token_hex(4)
    )
    vault = Vault.open(settings, database=database, provider=provider)
    yield vault
    vault.close()
    provider.close()
    database.dispose()


@pytest.fixture
def traced_server(spans: InMemorySpanExporter, transit_vault: Vault) -> Iterator[RunningServer]:
    running = start_server(transit_vault, "127.0.0.1:0")
    yield running
    running.stop(grace=1)


def _rpc_span(finished: tuple[ReadableSpan, ...], method: str) -> ReadableSpan:
    (found,) = [s for s in finished if s.kind is SpanKind.SERVER and s.name == f"{SERVICE}/{method}"]
    return found


def _children(finished: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _descendants(finished: tuple[ReadableSpan, ...], root: ReadableSpan) -> list[ReadableSpan]:
    found, frontier = [], [root]
    while frontier:
        children = _children(finished, frontier.pop())
        found += children
        frontier += children
    return found


def test_rpc_spans_have_database_and_vault_children_and_no_pii(
    traced_server: RunningServer, transit_vault: Vault, spans: InMemorySpanExporter, people: People
) -> None:
    token = transit_vault.tokens.create("pos-trace", "service").secret
    auth = (("authorization", f"Bearer {token}"),)
    person = people.next()
    request_ids = [f"req-{uuid.uuid4().hex}" for _ in range(2)]
    with grpc.insecure_channel(f"127.0.0.1:{traced_server.port}") as channel:
        stub = pb_grpc.CustomerServiceStub(channel)
        created = stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=customer_message(person), request_id=request_ids[0]),
            metadata=(*auth, ("x-request-id", request_ids[0])),
        ).customer
        transit_vault.data_keys.cache.invalidate(created.customer_id)  # the read must unwrap through Vault
        stub.GetCustomer(
            pb.GetCustomerRequest(customer_id=created.customer_id, purpose=PURPOSE),
            metadata=(*auth, ("x-request-id", request_ids[1])),
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCustomer(pb.GetCustomerRequest(customer_id=created.customer_id, purpose=PURPOSE))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finished = spans.get_finished_spans()

    create = _rpc_span(finished, "CreateCustomer")
    assert dict(create.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "CreateCustomer",
        "rpc.grpc.status_code": 0,
        "rpc.response.status_code": "OK",
        "piivault.role": "service",
    }
    assert create.parent is None
    created_under = _descendants(finished, create)
    statements = [s for s in created_under if "db.system.name" in (s.attributes or {})]
    assert {s.name for s in statements} >= {"INSERT", "SELECT"}
    assert all((s.attributes or {})["db.system.name"] == "sqlite" and s.kind is SpanKind.CLIENT for s in statements)
    vault_calls = [s for s in _children(finished, create) if s.name == "vault transit encrypt"]
    assert len(vault_calls) == 1  # the new DEK came from a pool filled by one batched Transit call
    assert vault_calls[0].kind is SpanKind.CLIENT and dict(vault_calls[0].attributes or {}) == {
        "vault.operation": "encrypt"
    }

    reads = [s for s in finished if s.kind is SpanKind.SERVER and s.name == f"{SERVICE}/GetCustomer"]
    (read,) = [s for s in reads if (s.attributes or {})["rpc.response.status_code"] == "OK"]
    assert [s.name for s in _children(finished, read) if s.name.startswith("vault")] == ["vault transit decrypt"]
    assert any(s.name == "SELECT" for s in _children(finished, read))
    (refused,) = [s for s in reads if s is not read]
    assert (refused.attributes or {})["rpc.response.status_code"] == "UNAUTHENTICATED"
    assert "piivault.role" not in (refused.attributes or {})  # never authenticated
    assert refused.status.status_code is not StatusCode.ERROR  # the caller's fault, not the server's

    forbidden = [needle.decode() for label, needle in needles([person]).items() if "/utf-8:" in label]
    forbidden += [created.customer_id, token, *request_ids]
    leaks = [
        (span.name, key)
        for span in finished
        for key, value in {"name": span.name, **dict(span.attributes or {})}.items()
        if any(f in str(value) for f in forbidden)
    ]
    assert leaks == []
    assert all(not span.events for span in finished)  # no exception (and so no message) recorded anywhere


def test_a_callers_traceparent_is_joined_and_its_tracestate_dropped(
    traced_server: RunningServer, transit_vault: Vault, spans: InMemorySpanExporter
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with grpc.insecure_channel(f"127.0.0.1:{traced_server.port}") as channel, pytest.raises(grpc.RpcError):
        pb_grpc.CustomerServiceStub(channel).GetCustomer(
            pb.GetCustomerRequest(customer_id="c_" + "0" * 26, purpose=PURPOSE),
            metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"), ("tracestate", "x=13800138000")),
        )
    span = _rpc_span(spans.get_finished_spans(), "GetCustomer")
    assert span.context is not None and span.parent is not None
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (trace_id, parent_id)
    assert "13800138000" not in str(span.context.trace_state)


def test_no_exporter_configured_means_no_tracing_and_no_telemetry_interceptor(
    transit_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not tracing.configure(Settings(otel_exporter="none"))
    assert not tracing.active()
    captured: dict[str, Any] = {}
    real_server = grpc.server

    def recording_server(*args: Any, **kwargs: Any) -> grpc.Server:
        captured.update(kwargs)
        return real_server(*args, **kwargs)

    monkeypatch.setattr(grpc, "server", recording_server)
    running = start_server(transit_vault, "127.0.0.1:0")
    running.stop(grace=0)
    assert [type(i) for i in captured["interceptors"]] == [CallGuard]
    with tracing.span("anything", {}) as opened:
        assert opened is None


def test_interceptors_are_installed_in_order_when_tracing_is_on(
    spans: InMemorySpanExporter, transit_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, Any] = {}
    real_server = grpc.server

    def recording_server(*args: Any, **kwargs: Any) -> grpc.Server:
        captured.update(kwargs)
        return real_server(*args, **kwargs)

    monkeypatch.setattr(grpc, "server", recording_server)
    running = start_server(transit_vault, "127.0.0.1:0")
    running.stop(grace=0)
    assert [type(i) for i in captured["interceptors"]] == [RpcTelemetry, CallGuard, RoleTagger]


def test_exporter_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="PIIVAULT_OTEL_EXPORTER must be one of: none, console, otlp"):
        Settings.from_env({"PIIVAULT_OTEL_EXPORTER": "zipkin"})
    assert Settings.from_env({}).otel_exporter == "none"
    otlp = Settings.from_env({"PIIVAULT_OTEL_EXPORTER": "otlp"})
    if _installed("opentelemetry.exporter.otlp.proto.grpc") or _installed("opentelemetry.exporter.otlp.proto.http"):
        tracing.check(otlp)
    else:
        with pytest.raises(ConfigError, match="optional package opentelemetry-exporter-otlp-proto-grpc"):
            tracing.check(otlp)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_console_exporter_is_configured_and_shut_down() -> None:
    assert tracing.configure(Settings(otel_exporter="console"))
    try:
        assert tracing.active()
    finally:
        tracing.shutdown()
    assert not tracing.active()
