"""What a failed call raises: one exception class per status code the vault returns.

    PiiVaultError                 every failed call; ``code``, ``message``, ``reason``, ``details``
    ├── InvalidArgument           ``field_violations``: (field, description) pairs from google.rpc.BadRequest
    ├── NotFound
    ├── AlreadyExists             ``existing_customer_id`` and ``field`` from google.rpc.ErrorInfo
    ├── Aborted                   a stale ``expected_version``: read the customer again
    ├── FailedPrecondition        ``reason``: CONSENT_REQUIRED, REQUEST_ID_REUSED, PROCESSING_RESTRICTED, ...
    ├── PermissionDenied          ``reason``: ROLE_NOT_ALLOWED or PURPOSE_NOT_ALLOWED
    ├── Unauthenticated
    ├── ResourceExhausted         ``retry_after``: seconds, from google.rpc.RetryInfo
    ├── Unavailable               retried by the client where that is safe; raised once the retries are spent
    ├── DeadlineExceeded
    └── DataLoss                  a stored ciphertext failed its integrity check

Any other status (INTERNAL, UNKNOWN, CANCELLED, ...) raises ``PiiVaultError`` itself. The rich details travel in the
``grpc-status-details-bin`` trailer as a ``google.rpc.Status`` (AIP-193); they are decoded here, once.

The vault's messages and field violations are fixed sentences that never hold a request value, and nothing from the
request is added here, so an exception (its ``str()``, its ``repr()``) is safe to log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PiiVaultError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

Metadata = tuple[tuple[str, str | bytes], ...]
STATUS_DETAILS_KEY = "grpc-status-details-bin"
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
)


class FieldViolation(NamedTuple):
    """One broken rule: ``field`` is the request path (``customer.national_id``), ``description`` the rule."""

    field: str
    description: str


class PiiVaultError(Exception):
    """A call the vault (or the transport) answered with a status other than OK.

    ``code`` is the gRPC status code, ``message`` the vault's fixed sentence, ``reason`` the google.rpc.ErrorInfo
    reason when the vault sent one (``""`` otherwise), ``details`` every decoded error detail (BadRequest, ErrorInfo,
    RetryInfo messages), ``status`` the whole google.rpc.Status when one came, ``attempts`` how many times the client
    sent the call, ``request_id`` the id it sent in ``x-request-id`` (the audit log records it). The transport's own
    error is chained as ``__cause__``.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
        details: Sequence[Message] = (),
        initial_metadata: Metadata = (),
        trailing_metadata: Metadata = (),
        request_id: str = "",
        attempts: int = 1,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.details = tuple(details)
        self.initial_metadata = initial_metadata
        self.trailing_metadata = trailing_metadata
        self.request_id = request_id
        self.attempts = attempts
        super().__init__(message)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        for detail in self.details:
            if isinstance(detail, error_details_pb2.ErrorInfo):
                return detail
        return None

    @property
    def reason(self) -> str:
        info = self.error_info
        return str(info.reason) if info is not None else ""

    @property
    def metadata(self) -> dict[str, str]:
        """The ErrorInfo metadata (e.g. ``customer_id`` and ``field`` of ALREADY_EXISTS)."""
        info = self.error_info
        return dict(info.metadata) if info is not None else {}

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        return f"{text} [{self.reason}]" if self.reason else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r}, reason={self.reason!r})"


class InvalidArgument(PiiVaultError):
    """The request broke a rule; ``field_violations`` names each field and rule (never the value)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def field_violations(self) -> list[FieldViolation]:
        return [
            FieldViolation(str(v.field), str(v.description))
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for v in detail.field_violations
        ]

    @property
    def fields(self) -> list[str]:
        return [violation.field for violation in self.field_violations]

    def __str__(self) -> str:
        rules = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        return f"{super().__str__()} ({rules})" if rules else super().__str__()


class NotFound(PiiVaultError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PiiVaultError):
    """An identifier of the request already belongs to a live customer: ``existing_customer_id`` owns it."""

    code = grpc.StatusCode.ALREADY_EXISTS

    @property
    def existing_customer_id(self) -> str | None:
        return self.metadata.get("customer_id") or None

    @property
    def field(self) -> str | None:
        return self.metadata.get("field") or None


class Aborted(PiiVaultError):
    code = grpc.StatusCode.ABORTED


class FailedPrecondition(PiiVaultError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(PiiVaultError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(PiiVaultError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(PiiVaultError):
    """A budget is spent (lookups per principal) or a message is too large; ``retry_after`` says when to try again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @property
    def retry_after(self) -> float | None:
        for detail in self.details:
            if isinstance(detail, error_details_pb2.RetryInfo):
                return float(detail.retry_delay.ToTimedelta().total_seconds())
        return None


class Unavailable(PiiVaultError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PiiVaultError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(PiiVaultError):
    code = grpc.StatusCode.DATA_LOSS


ERROR_CLASSES: dict[grpc.StatusCode, type[PiiVaultError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Aborted,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
    )
}


def from_rpc_error(error: grpc.RpcError, *, request_id: str = "", attempts: int = 1) -> PiiVaultError:
    """The typed exception for what a gRPC call raised (chain it: ``raise from_rpc_error(e) from e``)."""
    call = error if isinstance(error, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    message = (call.details() if call is not None else "") or ""
    trailing: Metadata = tuple(call.trailing_metadata() or ()) if call is not None else ()
    initial: Metadata = ()
    if call is not None:
        try:
            initial = tuple(call.initial_metadata() or ())
        except Exception:  # noqa: BLE001 - a call that never started has no initial metadata; that is not an error
            initial = ()
    status = _status(trailing, code)
    details = _unpack(status.details) if status is not None else ()
    return ERROR_CLASSES.get(code, PiiVaultError)(
        code,
        message,
        status=status,
        details=details,
        initial_metadata=initial,
        trailing_metadata=trailing,
        request_id=request_id,
        attempts=attempts,
    )


def _status(trailing: Metadata, code: grpc.StatusCode) -> status_pb2.Status | None:
    for key, value in trailing:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        # A Status whose code disagrees with the call's belongs to something else (a proxy); do not trust it.
        return status if status.code == code.value[0] else None
    return None


def _unpack(packed: Sequence[any_pb2.Any]) -> tuple[Message, ...]:
    found: list[Message] = []
    for item in packed:
        for kind in _DETAIL_TYPES:
            if item.Is(kind.DESCRIPTOR):  # type: ignore[arg-type]
                detail = kind()
                item.Unpack(detail)
                found.append(detail)
                break
        else:
            found.append(item)  # an unknown detail type stays packed
    return tuple(found)
