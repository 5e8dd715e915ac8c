"""A gRPC proxy in front of a piivault server that fails chosen calls the way a network or a load balancer does.

It forwards any call of the API byte for byte (metadata, deadline, status and trailers included). For each method a
queue of faults applies to its next calls, one fault per call:

- ``REFUSE``: answer UNAVAILABLE without forwarding (the server never sees the call).
- ``DROP_REPLY``: forward, let the server finish its work, then answer UNAVAILABLE instead of its reply — the case
  that makes retrying a write dangerous unless it is idempotent.
- ``DROP_AFTER_FIRST``: for server streams, forward the first response, then fail with UNAVAILABLE.
- ``DELAY``: wait ``delay`` seconds before forwarding.

Every call that reaches the proxy is recorded (method, x-request-id, the deadline left when it arrived), so tests can
count attempts and check what the client sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn

import grpc
from google.protobuf import descriptor_pool

import piivault.v1  # noqa: F401 - the API's descriptors must be in the default pool
from piivault.v1 import (  # noqa: F401 - imported for their descriptors
    analytics_pb2,
    audit_pb2,
    consent_pb2,
    customers_pb2,
    dsar_pb2,
    keys_pb2,
    purchases_pb2,
)

if TYPE_CHECKING:
    _Handler = grpc.GenericRpcHandler[bytes, bytes]
    _MethodHandler = grpc.RpcMethodHandler[bytes, bytes]
else:
    _Handler = grpc.GenericRpcHandler
    _MethodHandler = grpc.RpcMethodHandler

_DROPPED = ("authorization", "x-request-id")  # the only metadata the vault reads; everything else is transport


class Fault(Enum):
    REFUSE = "refuse"
    DROP_REPLY = "drop_reply"
    DROP_AFTER_FIRST = "drop_after_first"
    DELAY = "delay"


@dataclass(frozen=True)
class Seen:
    method: str
    request_id: str
    time_remaining: float | None
    fault: Fault | None


def _identity(data: bytes) -> bytes:
    return data


class FlakyProxy(_Handler):
    def __init__(self, target: str, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: list[Seen] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._upstream = grpc.insecure_channel(target)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="proxy"))
        self._server.add_generic_rpc_handlers((self,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> FlakyProxy:
        self._server.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._server.stop(grace=None)
        self._upstream.close()

    def fail(self, method: str, *faults: Fault) -> None:
        """The next calls of ``method`` (``CustomerService/CreateCustomer``) meet these faults, in order."""
        with self._lock:
            self._faults.setdefault(f"/piivault.v1.{method}", []).extend(faults)

    def attempts(self, method: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == f"/piivault.v1.{method}"]

    # grpc.GenericRpcHandler
    def service(self, details: grpc.HandlerCallDetails) -> _MethodHandler | None:
        method: str = details.method
        if not method.startswith("/piivault.v1."):
            return None
        service_name, method_name = method[1:].split("/")
        found = descriptor_pool.Default().FindMethodByName(f"{service_name}.{method_name}")
        if found.client_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(method), request_deserializer=_identity, response_serializer=_identity
            )
        if found.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(method), request_deserializer=_identity, response_serializer=_identity
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary_unary(method), request_deserializer=_identity, response_serializer=_identity
        )

    def _arrive(self, method: str, context: grpc.ServicerContext) -> tuple[Fault | None, tuple[tuple[str, str], ...]]:
        metadata = tuple((str(k), str(v)) for k, v in context.invocation_metadata() if k in _DROPPED)
        with self._lock:
            queue = self._faults.get(method, [])
            fault = queue.pop(0) if queue else None
            request_id = dict(metadata).get("x-request-id", "")
            self.seen.append(Seen(method, request_id, context.time_remaining(), fault))
        if fault is Fault.REFUSE:
            context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: upstream connect error")
        if fault is Fault.DELAY:
            time.sleep(self.delay)
        return fault, metadata

    def _unary_unary(self, method: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        call = self._upstream.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            fault, metadata = self._arrive(method, context)
            try:
                response: bytes = call(request, metadata=metadata, timeout=context.time_remaining())
            except grpc.RpcError as error:
                _relay(error, context)
            if fault is Fault.DROP_REPLY:
                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: upstream connection reset")
            return response

        return handle

    def _stream_unary(self, method: str) -> Callable[[Iterator[bytes], grpc.ServicerContext], bytes]:
        call = self._upstream.stream_unary(method, request_serializer=_identity, response_deserializer=_identity)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            fault, metadata = self._arrive(method, context)
            received = list(requests)
            try:
                response: bytes = call(iter(received), metadata=metadata, timeout=context.time_remaining())
            except grpc.RpcError as error:
                _relay(error, context)
            if fault is Fault.DROP_REPLY:
                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: upstream connection reset")
            return response

        return handle

    def _unary_stream(self, method: str) -> Callable[[bytes, grpc.ServicerContext], Iterator[bytes]]:
        call = self._upstream.unary_stream(method, request_serializer=_identity, response_deserializer=_identity)

        def handle(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            fault, metadata = self._arrive(method, context)
            responses = call(request, metadata=metadata, timeout=context.time_remaining())
            sent = 0
            try:
                for response in responses:
                    if fault is Fault.DROP_AFTER_FIRST and sent == 1:
                        context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: upstream connection reset")
                    yield response
                    sent += 1
            except grpc.RpcError as error:
                _relay(error, context)
            if fault in (Fault.DROP_REPLY, Fault.DROP_AFTER_FIRST):
                context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: upstream connection reset")

        return handle


def _relay(error: grpc.RpcError, context: grpc.ServicerContext) -> NoReturn:
    """Pass the server's status on unchanged, rich error details (grpc-status-details-bin) included."""
    assert isinstance(error, grpc.Call)
    context.set_trailing_metadata(tuple(error.trailing_metadata() or ()))
    context.abort(error.code(), error.details() or "")
