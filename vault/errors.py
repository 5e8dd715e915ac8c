"""Domain errors, the one exception tree every service raises.

    PiivaultError
    ├── InvalidArgument          bad input; carries field violations (field path + rule, never the value)
    ├── NotFound                 no live customer with that id
    ├── AlreadyExists            an identifier already belongs to another live customer
    ├── IdempotencyConflict      a request_id reused with a different body
    ├── VersionConflict          expected_version is stale
    ├── FailedPrecondition       the system is not in a state that allows the operation (the message says why)
    │   ├── ConsentRequired      the purpose needs the customer's consent and there is no current one
    │   ├── GuardianRequired     the customer is under 14: only a guardian may consent (PIPL art. 31)
    │   ├── ProcessingRestricted the customer's data is restricted (stored, not processed) after a DSAR
    │   └── ErasureBlocked       a legal hold or restriction blocks erasure
    ├── Unauthenticated          missing, malformed, unknown or revoked token
    ├── PermissionDenied         the principal's role may not make this call
    │   └── PurposeNotAllowed    the principal's role may not process personal data for the named purpose
    ├── ResourceExhausted        the principal's lookup budget is spent; ``retry_after_seconds`` says when to retry
    ├── IntegrityError           a ciphertext failed authentication (tampered, or copied to another row/field)
    └── Unavailable              a dependency (database, key provider) cannot be reached

The gRPC layer maps each class to one status code in exactly one table (``vault.api.status``). Messages are fixed,
PII-free sentences: they are shown to callers and written to logs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: ``field`` is the request path (``customer.mobile``), ``rule`` says what is expected."""

    field: str
    rule: str


class PiivaultError(Exception):
    """Base of every error the domain raises on purpose. ``outcome`` is what the audit log records."""

    message = "internal error"
    outcome = "error"
    # Customers the failed call concerned, for its audit event (ids only; set where the domain learned them).
    subjects: tuple[str, ...] = ()

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)

    @property
    def public_message(self) -> str:
        return str(self)


class InvalidArgument(PiivaultError):
    message = "the request is invalid"
    outcome = "invalid"

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(sorted({v.field for v in violations}))
        super().__init__(f"invalid argument: {fields}")
        self.violations = violations

    @classmethod
    def single(cls, field: str, rule: str) -> InvalidArgument:
        return cls([FieldViolation(field, rule)])


class NotFound(PiivaultError):
    message = "customer not found"
    outcome = "not_found"


class AlreadyExists(PiivaultError):
    """An identifier is taken; ``customer_id`` names the owner, so a caller can link to it instead of duplicating."""

    outcome = "already_exists"

    def __init__(self, field: str, customer_id: str) -> None:
        super().__init__(f"{field} already belongs to another customer")
        self.field = field
        self.customer_id = customer_id
        self.subjects = (customer_id,)  # the owner's id is disclosed to the caller


class IdempotencyConflict(PiivaultError):
    message = "request_id was already used with a different request body"
    outcome = "request_id_reused"


class VersionConflict(PiivaultError):
    message = "the customer has changed since expected_version; read it again and retry"
    outcome = "version_conflict"


class FailedPrecondition(PiivaultError):
    """The message is written by the raiser and must be free of personal data (counts and versions only)."""

    message = "the operation is not allowed in the current state"
    outcome = "failed_precondition"


class ConsentRequired(FailedPrecondition):
    message = "the purpose requires the customer's consent, and there is no current consent"
    outcome = "consent_required"

    def __init__(self, customer_ids: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.subjects = customer_ids


class GuardianRequired(FailedPrecondition):
    message = "the customer is younger than 14: consent must be given by a parent or guardian (PIPL art. 31)"
    outcome = "guardian_required"

    def __init__(self, customer_ids: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.subjects = customer_ids


class ProcessingRestricted(FailedPrecondition):
    message = "processing of this customer's data is restricted at the customer's request"
    outcome = "restricted"

    def __init__(self, customer_ids: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.subjects = customer_ids


class ErasureBlocked(FailedPrecondition):
    outcome = "erasure_blocked"

    def __init__(self, legal_hold: bool, customer_id: str) -> None:
        super().__init__(
            "erasure is blocked: the customer is under legal hold"
            if legal_hold
            else "erasure is blocked: processing is restricted; lift the restriction first"
        )
        self.legal_hold = legal_hold
        self.subjects = (customer_id,)


class Unauthenticated(PiivaultError):
    message = "a valid bearer token is required"
    outcome = "unauthenticated"


class PermissionDenied(PiivaultError):
    message = "the caller's role may not perform this operation"
    outcome = "denied"


class PurposeNotAllowed(PermissionDenied):
    message = "the caller's role may not process personal data for this purpose"


class ResourceExhausted(PiivaultError):
    message = "too many lookups by this principal; retry later"
    outcome = "rate_limited"

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after_seconds


class IntegrityError(PiivaultError):
    message = "stored data failed its integrity check"
    outcome = "integrity_error"


class Unavailable(PiivaultError):
    message = "a dependency of the vault is unavailable; retry later"
    outcome = "unavailable"
