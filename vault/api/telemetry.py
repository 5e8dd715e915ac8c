"""RPC telemetry: one server interceptor that counts and times every call and, when tracing is on, opens its span.

It is the outermost interceptor, so it sees every call the server answers — refused by the call guard
(UNAUTHENTICATED, PERMISSION_DENIED), failed in a servicer, or for a method the server does not have — and reads the
final status code from the call's context after the guard has mapped the error. A method the server does not serve
is counted under ``unknown``: its name comes from the client and must not become a label.

A second, inner interceptor (``RoleTagger``, installed only when tracing is on) runs after the call guard has
authenticated the caller and puts the caller's role — a fixed role name, never the principal or its token — on the
RPC span.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

from vault.api.context import current_caller
from vault.observability import tracing
from vault.observability.metrics import UNKNOWN_METHOD, RpcCounters

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not subscriptable
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

_Continuation = Callable[[grpc.HandlerCallDetails], _Handler | None]
# The codes that mean the server failed, not the caller (OpenTelemetry's rule for gRPC server spans).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class RpcTelemetry(_Interceptor):
    """Counts and times each RPC into ``counters`` (None: metrics off) and traces it when tracing is on."""

    def __init__(self, counters: RpcCounters | None) -> None:
        self._counters = counters

    def intercept_service(self, continuation: _Continuation, details: grpc.HandlerCallDetails) -> _Handler | None:
        handler = continuation(details)
        if handler is None:  # grpc answers UNIMPLEMENTED; the name is the client's, so it is not used
            if self._counters is not None:
                self._counters.record(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name, 0.0)
            return None
        call = _Call(details, self._counters)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                call.around(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                call.around_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                call.around(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:  # server reflection
            return grpc.stream_stream_rpc_method_handler(
                call.around_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class _Call:
    """What is known of one RPC before it runs: its registered method name and its caller's trace parent."""

    def __init__(self, details: grpc.HandlerCallDetails, counters: RpcCounters | None) -> None:
        self.method: str = details.method
        self.counters = counters
        self.details = details

    def around(self, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            opened = self._open_span()
            failed = True
            try:
                if opened is None:
                    response = behaviour(request, context)
                else:
                    with tracing.current(opened):
                        response = behaviour(request, context)
                failed = False
                return response
            finally:
                self._finish(context, started, opened, failed=failed)

        return observed

    def around_stream(self, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Any]:
        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            opened = self._open_span()
            failed, cancelled = True, False
            try:
                if opened is None:
                    yield from behaviour(request, context)
                else:
                    with tracing.current(opened):
                        yield from behaviour(request, context)
                failed = False
            except GeneratorExit:  # the client went away mid-stream
                cancelled = True
                raise
            finally:
                self._finish(context, started, opened, failed=failed, cancelled=cancelled)

        return observed

    def _open_span(self) -> Span | None:
        if not tracing.active():
            return None
        service, _, method = self.method.lstrip("/").partition("/")
        traceparent = next((str(v) for k, v in self.details.invocation_metadata or () if k == "traceparent"), None)
        return tracing.start_server_span(
            f"{service}/{method}", {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}, traceparent
        )

    def _finish(
        self,
        context: grpc.ServicerContext,
        started: float,
        opened: Span | None,
        *,
        failed: bool,
        cancelled: bool = False,
    ) -> None:
        code = _code_of(context, failed=failed, cancelled=cancelled)
        if self.counters is not None:
            self.counters.record(self.method, code.name, time.perf_counter() - started)
        if opened is not None:
            opened.set_attribute("rpc.grpc.status_code", code.value[0])
            opened.set_attribute("rpc.response.status_code", code.name)
            if code in _SERVER_ERRORS:
                tracing.mark_failed(opened, code.name)
            opened.end()


def _code_of(context: grpc.ServicerContext, *, failed: bool, cancelled: bool) -> grpc.StatusCode:
    """The status the call ends with: what the guard (or a servicer) set on the context; else OK, or what grpc
    answers for an exception that escaped (UNKNOWN) or a stream the client abandoned (CANCELLED)."""
    # ServicerContext.code() exists at run time (grpcio >= 1.38); grpc-stubs does not declare it.
    code: grpc.StatusCode | None = getattr(context, "code", lambda: None)()
    if code is not None:
        return code
    if cancelled:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class RoleTagger(_Interceptor):
    """Put the authenticated caller's role on the current RPC span (runs inside the call guard)."""

    def intercept_service(self, continuation: _Continuation, details: grpc.HandlerCallDetails) -> _Handler | None:
        handler = continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _tagged(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _tagged(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _tagged(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _tagged(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def tagged(request: Any, context: grpc.ServicerContext) -> Any:
        caller = current_caller.get(None)
        if caller is not None and caller.role:
            trace.get_current_span().set_attribute("piivault.role", caller.role)
        return behaviour(request, context)

    return tagged
