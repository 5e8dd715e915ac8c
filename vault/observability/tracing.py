"""OpenTelemetry tracing: a span per RPC, with the database statements and Vault calls it made as its children.

Off unless ``PIIVAULT_OTEL_EXPORTER`` names an exporter (``console``, or ``otlp`` when the optional package
``opentelemetry-exporter-otlp-proto-grpc`` or ``-proto-http`` is installed; it reads the standard
``OTEL_EXPORTER_OTLP_*`` variables, and the SDK reads ``OTEL_SERVICE_NAME`` and ``OTEL_TRACES_SAMPLER``). Off means
free: the RPC interceptor and the database listeners are not installed at all, and the Vault hook is one ``None``
check.

No span carries personal data. Attributes are fixed names (RPC, operation, status code, the caller's role, the
database system and statement text — statements are always built with bound parameters, so their text holds
placeholders, never values; parameters are never recorded). Exceptions are never recorded on a span: their messages
can hold values (a database error quotes its parameters); only the exception's type name is. A caller's W3C
``traceparent`` is honoured so that the RPC span joins the caller's trace, but its ``tracestate`` is dropped: it is
free text a caller could fill with anything.

The configured tracer is kept here, at module level, the way OpenTelemetry keeps its provider: the key provider and
the engine listeners reach it without a tracer being threaded through every constructor. It is set once at start-up
(``configure``) or by a test (``install``/``uninstall``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from vault.config import ConfigError, Settings

if TYPE_CHECKING:  # the SDK is imported only when an exporter is configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

INSTRUMENTATION = "piivault"
_STATEMENT_LIMIT = 2048
_SPAN_KEY = "_piivault_span"
_OTLP_MODULES = (
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
_PROPAGATOR = TraceContextTextMapPropagator()

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def configure(settings: Settings) -> bool:
    """Set up the exporter ``settings.otel_exporter`` names; False (and nothing done) for ``none``.

    Raises ``ConfigError`` for ``otlp`` without the optional exporter package."""
    if settings.otel_exporter == "none":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter = _otlp_exporter() if settings.otel_exporter == "otlp" else ConsoleSpanExporter()
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "piivault"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    global _provider
    _provider = provider
    return True


def check(settings: Settings) -> None:
    """Raise ``ConfigError`` now if ``configure`` would (run by a parent process before it starts workers)."""
    if settings.otel_exporter == "otlp":
        _otlp_exporter()


def _otlp_exporter() -> SpanExporter:
    for name in _OTLP_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return cast("SpanExporter", module.OTLPSpanExporter())
    raise ConfigError(
        "PIIVAULT_OTEL_EXPORTER=otlp needs the optional package opentelemetry-exporter-otlp-proto-grpc "
        "(or opentelemetry-exporter-otlp-proto-http): install it, or choose console or none"
    )


def install(provider: trace.TracerProvider) -> None:
    """Trace through ``provider`` from now on (tests pass one with an in-memory exporter)."""
    global _tracer
    _tracer = provider.get_tracer(INSTRUMENTATION)
    _listen_to_engines()


def uninstall() -> None:
    global _tracer
    _tracer = None
    for name, listener in _ENGINE_LISTENERS:
        if event.contains(Engine, name, listener):
            event.remove(Engine, name, listener)


def shutdown() -> None:
    """Flush and stop the exporter ``configure`` set up (at server shutdown)."""
    global _provider
    uninstall()
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> Tracer | None:
    return _tracer


def active() -> bool:
    return _tracer is not None


def start_server_span(name: str, attributes: Mapping[str, str], traceparent: str | None) -> Span | None:
    """The span of one incoming RPC (not yet current), or None when tracing is off."""
    if _tracer is None:
        return None
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    return _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes))


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """Make ``span`` the current span for the block, without recording exceptions on it or ending it."""
    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield span


@contextmanager
def span(name: str, attributes: Mapping[str, str], kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span | None]:
    """A child span of the current one around the block; nothing at all when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, kind=kind, attributes=dict(attributes), record_exception=False, set_status_on_exception=False
    ) as opened:
        try:
            yield opened
        except BaseException as error:
            mark_failed(opened, type(error).__name__)
            raise


def mark_failed(target: Span, error_type: str) -> None:
    target.set_attribute("error.type", error_type)
    target.set_status(Status(StatusCode.ERROR))


# -- database statements ---------------------------------------------------------------------------------------------


def _statement_span(tracer: Tracer, system: str, statement: str) -> Span:
    operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    return tracer.start_span(
        operation,
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": system,
            "db.operation.name": operation,
            "db.query.text": statement[:_STATEMENT_LIMIT],  # placeholders only; parameters are never recorded
        },
    )


@contextmanager
def statement_span(system: str, statement: str) -> Iterator[None]:
    """The span of one statement run on the driver's own connection (``vault.storage.db.DriverQuery``), as the engine
    listeners below give SQLAlchemy's statements; nothing outside a traced operation."""
    if _tracer is None or not trace.get_current_span().is_recording():
        yield
        return
    opened = _statement_span(_tracer, system, statement)
    try:
        yield
    except BaseException as error:
        mark_failed(opened, type(error).__name__)
        raise
    finally:
        opened.end()


def _before_cursor_execute(
    connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    # Only inside a traced operation: statements outside any RPC (start-up, background jobs) would each be a root span.
    if _tracer is None or context is None or not trace.get_current_span().is_recording():
        return
    setattr(context, _SPAN_KEY, _statement_span(_tracer, str(connection.dialect.name), statement))


def _after_cursor_execute(
    connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    opened: Span | None = getattr(context, _SPAN_KEY, None)
    if opened is not None:
        setattr(context, _SPAN_KEY, None)
        opened.end()


def _handle_error(failure: ExceptionContext) -> None:
    opened: Span | None = getattr(failure.execution_context, _SPAN_KEY, None)
    if opened is not None:
        setattr(failure.execution_context, _SPAN_KEY, None)
        mark_failed(opened, type(failure.original_exception).__name__)
        opened.end()


_ENGINE_LISTENERS = (
    ("before_cursor_execute", _before_cursor_execute),
    ("after_cursor_execute", _after_cursor_execute),
    ("handle_error", _handle_error),
)


def _listen_to_engines() -> None:
    """Listen on the ``Engine`` class, so every engine of the process (SQLite's separate writer included) is traced."""
    for name, listener in _ENGINE_LISTENERS:
        if not event.contains(Engine, name, listener):
            event.listen(Engine, name, listener)
