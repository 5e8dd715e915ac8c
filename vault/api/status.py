"""The one table from domain errors to gRPC status codes, and the rich error details callers get (AIP-193).

Messages are the domain errors' fixed sentences; nothing from the request (values, ``repr`` of exceptions) is copied
into a status, so a status can never carry personal data.
"""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault import errors

DOMAIN = "piivault.v1"

STATUS_OF: dict[type[errors.PiivaultError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.IdempotencyConflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.VersionConflict: grpc.StatusCode.ABORTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.IntegrityError: grpc.StatusCode.DATA_LOSS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

_REASONS: dict[type[errors.PiivaultError], str] = {
    errors.AlreadyExists: "IDENTIFIER_IN_USE",
    errors.IdempotencyConflict: "REQUEST_ID_REUSED",
    errors.VersionConflict: "VERSION_MISMATCH",
    errors.IntegrityError: "CIPHERTEXT_INTEGRITY",
    errors.Unauthenticated: "TOKEN_INVALID",
    errors.PermissionDenied: "ROLE_NOT_ALLOWED",
    errors.PurposeNotAllowed: "PURPOSE_NOT_ALLOWED",
    errors.ConsentRequired: "CONSENT_REQUIRED",
    errors.GuardianRequired: "GUARDIAN_CONSENT_REQUIRED",
    errors.ProcessingRestricted: "PROCESSING_RESTRICTED",
    errors.ErasureBlocked: "ERASURE_BLOCKED",
    errors.ResourceExhausted: "LOOKUP_RATE_EXCEEDED",
}


def status_code_of(error: errors.PiivaultError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.PiivaultError) -> grpc.Status:
    code = status_code_of(error)
    details: list[any_pb2.Any] = []
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.rule) for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    reason = _REASONS.get(type(error))
    if reason is not None:
        metadata = {}
        if isinstance(error, errors.AlreadyExists):
            metadata = {"customer_id": error.customer_id, "field": error.field}
        details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)))
    if isinstance(error, errors.ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(dt.timedelta(seconds=max(error.retry_after_seconds, 0.001)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    message = status_pb2.Status(code=code.value[0], message=error.public_message, details=details)
    return rpc_status.to_status(message)


def internal_status() -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))


def _pack(
    message: error_details_pb2.BadRequest | error_details_pb2.ErrorInfo | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
