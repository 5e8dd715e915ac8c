"""How every call is sent: bearer token and request id in the metadata, one deadline, retries, typed errors.

The three call shapes of the API each get one function. The retry loop is the same everywhere: an error whose code the
policy retries, on a call marked idempotent, with time left before the deadline, waits a jittered backoff (or the
server's RetryInfo delay, if longer) and sends the call again with the same request and the same request id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from piivault.client.errors import PiiVaultError, ResourceExhausted, from_rpc_error
from piivault.client.retry import RetryPolicy

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Metadata = tuple[tuple[str, str], ...]

REQUEST_ID_HEADER = "x-request-id"
_HEADER_ID_MAX = 64  # the vault ignores a longer x-request-id and records one of its own


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CallSettings:
    """What every call of one client shares. ``token`` is never printed."""

    token: str | None = field(repr=False)
    default_timeout: float
    stream_timeout: float
    retry: RetryPolicy
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def metadata(self, request_id: str) -> Metadata:
        header_id = request_id
        if not (len(request_id) <= _HEADER_ID_MAX and request_id.isascii() and request_id.isprintable()):
            header_id = new_request_id()
        pairs: list[tuple[str, str]] = [(REQUEST_ID_HEADER, header_id)]
        if self.token is not None:
            pairs.append(("authorization", f"Bearer {self.token}"))
        return tuple(pairs)


class _Attempts:
    """Counts the attempts of one call and decides, after a failure, whether (and after how long) to send it again."""

    def __init__(self, settings: CallSettings, timeout: float, idempotent: bool, request_id: str) -> None:
        self.settings = settings
        self.deadline = settings.clock() + timeout
        self.idempotent = idempotent
        self.request_id = request_id
        self.number = 1

    def remaining(self) -> float:
        return max(self.deadline - self.settings.clock(), 0.0)

    def fail(self, error: grpc.RpcError, *, retryable: bool = True) -> PiiVaultError | None:
        """The exception to raise, or ``None`` after waiting when the call should be sent again."""
        mapped = from_rpc_error(error, request_id=self.request_id, attempts=self.number)
        policy = self.settings.retry
        if not (retryable and self.idempotent and mapped.code in policy.codes and self.number < policy.max_attempts):
            return mapped
        delay = policy.backoff(self.number)
        if isinstance(mapped, ResourceExhausted) and mapped.retry_after is not None:
            delay = max(delay, mapped.retry_after)
        if delay >= self.remaining():
            return mapped
        self.settings.sleep(delay)
        self.number += 1
        return None


def unary(
    settings: CallSettings,
    method: grpc.UnaryUnaryMultiCallable[Req, Resp],
    request: Req,
    *,
    request_id: str | None,
    idempotent: bool,
    timeout: float | None,
) -> Resp:
    request_id = request_id or new_request_id()
    attempts = _Attempts(settings, settings.default_timeout if timeout is None else timeout, idempotent, request_id)
    metadata = settings.metadata(request_id)
    while True:
        try:
            return method(request, timeout=attempts.remaining(), metadata=metadata)
        except grpc.RpcError as error:
            raised = attempts.fail(error)
            if raised is not None:
                raise raised from error


def client_stream(
    settings: CallSettings,
    method: grpc.StreamUnaryMultiCallable[Req, Resp],
    requests: Iterable[Req],
    *,
    request_id: str | None,
    idempotent: bool,
    timeout: float | None,
) -> Resp:
    """A client-streaming call. Only a ``Sequence`` of requests can be sent again; an iterator is sent once."""
    request_id = request_id or new_request_id()
    replayable = isinstance(requests, Sequence)
    attempts = _Attempts(
        settings, settings.stream_timeout if timeout is None else timeout, idempotent and replayable, request_id
    )
    metadata = settings.metadata(request_id)
    while True:
        try:
            return method(iter(requests), timeout=attempts.remaining(), metadata=metadata)
        except grpc.RpcError as error:
            raised = attempts.fail(error)
            if raised is not None:
                raise raised from error


class ResponseStream(Generic[Resp]):
    """The responses of a server-streaming call, as an iterator; failures raise ``PiiVaultError``.

    The call starts at once, as gRPC's own do. An idempotent call that fails before its first response is sent again;
    once a response has arrived, a failure is raised (the caller has seen part of the answer). Leaving a ``with``
    block, or ``cancel()``, ends the call.
    """

    def __init__(
        self,
        settings: CallSettings,
        method: grpc.UnaryStreamMultiCallable[Req, Resp],
        request: Req,
        *,
        request_id: str | None,
        idempotent: bool,
        timeout: float | None,
    ) -> None:
        request_id = request_id or new_request_id()
        self._method: grpc.UnaryStreamMultiCallable[Any, Resp] = method
        self._request: Message = request
        self._metadata = settings.metadata(request_id)
        self._attempts = _Attempts(
            settings, settings.stream_timeout if timeout is None else timeout, idempotent, request_id
        )
        self._call = self._start(self._attempts.remaining())
        self._responses: Iterator[Resp] = iter(self._call)
        self._received = False

    def _start(self, timeout: float) -> grpc.CallIterator[Resp]:
        return self._method(self._request, timeout=timeout, metadata=self._metadata)

    def __iter__(self) -> ResponseStream[Resp]:
        return self

    def __next__(self) -> Resp:
        while True:
            try:
                response = next(self._responses)
            except grpc.RpcError as error:
                raised = self._attempts.fail(error, retryable=not self._received)
                if raised is not None:
                    raise raised from error
                self._call = self._start(self._attempts.remaining())
                self._responses = iter(self._call)
                continue
            self._received = True
            return response

    def cancel(self) -> None:
        # grpc-stubs leaves Call.cancel untyped.
        cancel: Callable[[], object] = self._call.cancel
        cancel()

    def __enter__(self) -> ResponseStream[Resp]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.cancel()
