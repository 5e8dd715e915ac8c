"""The call guard: one server interceptor that authenticates, authorises, maps errors, audits failures and logs.

Servicers stay thin: they convert, call one service method and convert back. Any ``PiivaultError`` they raise becomes
its status from ``vault.api.status``; a database that cannot be reached or answer (SQLAlchemy's operational errors,
whichever service let them through) becomes ``Unavailable``; anything else becomes INTERNAL with a fixed message, and
only the exception's type name is logged. Every wait for PostgreSQL during a call is bounded
(``vault.storage.db.answering_within``), so an unreachable database fails calls fast instead of holding their threads.
Successful operations are audited by the services (inside their transactions); every failed or refused call —
unauthenticated, denied, invalid, not found — is audited here, so no attempt goes unrecorded.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from audit.events import AuditDraft, Caller, is_customer_id
from audit.log import AuditLog
from vault.api.context import current_caller
from vault.api.status import internal_status, status_code_of, to_status
from vault.auth.certificates import ClientCertificates
from vault.auth.policy import PUBLIC_PREFIXES, authorize
from vault.auth.tokens import Principal, TokenService
from vault.errors import InvalidArgument, PiivaultError, Unauthenticated, Unavailable
from vault.storage.db import REQUEST_ANSWER_SECONDS, answering_within

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not subscriptable
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler

_log = structlog.get_logger("piivault.rpc")
_REQUEST_ID_MAX = 64
_PURPOSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CERTIFICATE_REFUSED = "the client certificate is not registered, was revoked or has expired; or send a bearer token"


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata():
        if name == key:
            return str(value)
    return None


def _request_id(context: grpc.ServicerContext) -> str:
    given = _metadata(context, "x-request-id")
    if given and len(given) <= _REQUEST_ID_MAX and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


class CallGuard(_Interceptor):
    def __init__(self, tokens: TokenService, audit: AuditLog, certificates: ClientCertificates | None = None) -> None:
        self._tokens = tokens
        self._audit = audit
        self._certificates = certificates

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], _Handler | None], details: Any
    ) -> _Handler | None:
        handler = continuation(details)
        method: str = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guard(method, handler.unary_unary),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guard_stream(method, handler.unary_stream),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(
                self._guard(method, lambda requests, context: stream_unary(_checked_stream(requests), context)),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        # Bidirectional streams: none in the API; nothing unguarded may run.
        return None

    def _enter(self, method: str, context: grpc.ServicerContext, call: _CallRecord) -> Any:
        principal = self._authenticate(context)
        call.caller = Caller(
            principal.name, principal.role, method, call.request_id, call.caller.peer, _purpose(call.request)
        )
        authorize(method, principal)
        return current_caller.set(call.caller)

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        """A bearer token decides whenever one is sent; otherwise a registered client certificate, if one was verified.

        A call with an ``authorization`` header never falls back to its certificate: a wrong token stays an error.
        """
        authorization = _metadata(context, "authorization")
        if authorization is not None or self._certificates is None:
            return self._tokens.authenticate(authorization)
        # gRPC sets this only for a certificate the TLS handshake verified against PIIVAULT_TLS_CLIENT_CA (the server
        # never uses a "request but don't verify" mode), so its presence means the chain checked out. grpc-stubs
        # declares the values as bytes; at run time each is a sequence of bytes (here one PEM certificate).
        presented = cast("Sequence[bytes]", context.auth_context().get("x509_pem_cert", ()))
        if not presented:
            raise Unauthenticated()
        principal = self._certificates.authenticate(presented[0])
        if principal is None:
            raise Unauthenticated(_CERTIFICATE_REFUSED)
        return principal

    def _guard(self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            with _CallRecord(method, context, request, self._audit) as call:
                token = self._enter(method, context, call)
                try:
                    _refuse_undecodable(request)
                    return behaviour(request, context)
                finally:
                    current_caller.reset(token)
            return None  # reached only after the call was aborted

        return guarded

    def _guard_stream(
        self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _CallRecord(method, context, request, self._audit) as call:
                token = self._enter(method, context, call)
                try:
                    _refuse_undecodable(request)
                    yield from behaviour(request, context)
                finally:
                    current_caller.reset(token)

        return guarded


class _CallRecord:
    """Maps what a call raised to its status (aborting the call), audits the failure, and writes the access-log line."""

    def __init__(self, method: str, context: grpc.ServicerContext, request: Any, audit: AuditLog) -> None:
        self.method = method
        self.context = context
        self.request = request
        self.audit = audit
        self.request_id = _request_id(context)
        self.caller = Caller("", "", method, self.request_id, str(context.peer() or ""))
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        self._answers = answering_within(REQUEST_ANSWER_SECONDS)

    def __enter__(self) -> _CallRecord:
        self._answers.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if error is not None and _is_database_failure(error):
                _log.warning(
                    "rpc.database_unavailable",
                    rpc=self.method,
                    error_type=type(error).__name__,
                    request_id=self.request_id,
                )
                error = Unavailable()
            if isinstance(error, PiivaultError):
                self.code = status_code_of(error)
                self._audit_failure(error)
                self.context.abort_with_status(to_status(error))
            elif isinstance(error, Exception) and not _is_abort(error):
                self.code = grpc.StatusCode.INTERNAL
                _log.error(
                    "rpc.unexpected_error", rpc=self.method, error_type=type(error).__name__, request_id=self.request_id
                )
                self._audit_failure(error)
                self.context.abort_with_status(internal_status())
        finally:
            self._answers.__exit__(None, None, None)
            _log.info(
                "rpc",
                rpc=self.method,
                code=self.code.name,
                principal=self.caller.principal or None,
                request_id=self.request_id,
                duration_ms=round((time.perf_counter() - self.started) * 1000, 3),
            )

    def _audit_failure(self, error: Exception) -> None:
        subjects = _subjects(self.request)
        outcome = "error"
        if isinstance(error, PiivaultError):
            subjects = tuple(dict.fromkeys((*subjects, *error.subjects)))
            outcome = error.outcome
        try:
            self.audit.record(AuditDraft.of(self.caller, outcome, subjects))
        except Exception as failure:  # noqa: BLE001 - the call is already failing; nothing may escape the guard
            _log.error(
                "audit.failure_not_recorded",
                rpc=self.method,
                request_id=self.request_id,
                error_type=type(failure).__name__,
            )


def _is_database_failure(error: BaseException) -> bool:
    """The database is down, unreachable, out of space or timed out (not a bug of ours): UNAVAILABLE, retry later.

    Services translate the failures they expect; this catches the rest (token lookups, reads), which would otherwise
    reach the caller as INTERNAL. SQLAlchemy's message holds the statement and its parameters: it is never logged.
    """
    if isinstance(error, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _subjects(request: Any) -> tuple[str, ...]:
    """Customer ids named by a request; only well-formed ids, since a malformed one could be personal data."""
    nested = getattr(request, "customer", None)
    candidates = (getattr(request, "customer_id", None), getattr(nested, "customer_id", None))
    return tuple(c for c in candidates if isinstance(c, str) and is_customer_id(c))


class _Undecodable:
    """Stands for a request message that did not parse (invalid UTF-8 in a string field, truncated bytes)."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """gRPC answers a message that fails to parse with INTERNAL, before any interceptor runs and without an audit
    event. Parse leniently instead, so the guard authenticates the caller and refuses it as INVALID_ARGUMENT."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError, and others for some malformed inputs
            return _UNDECODABLE

    return parse


def _refuse_undecodable(request: Any) -> None:
    if request is _UNDECODABLE:
        raise InvalidArgument.single("request", "must be a valid protobuf message; string fields must be UTF-8")


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        _refuse_undecodable(request)
        yield request


def _purpose(request: Any) -> str:
    """The purpose a request names (the audit event records it even when the call is refused).

    Only a value shaped like a registry name (``consent.purposes``) is recorded: anything else may be personal data
    sent in the wrong field, and the append-only audit log would keep it for good.
    """
    purpose = getattr(request, "purpose", "")
    return purpose if isinstance(purpose, str) and _PURPOSE_NAME.fullmatch(purpose) else ""


def _is_abort(error: BaseException) -> bool:
    # context.abort raises a bare Exception subclass private to grpc; let it through untouched.
    return type(error).__module__.startswith("grpc")
