"""The typed Python client of the piivault API: ``PiiVault(address, token)``.

It depends only on grpcio, protobuf, googleapis-common-protos and the generated ``piivault.v1`` code — never on the
server — and is distributed on its own as ``piivault-client`` (``clients/pyproject.toml``).

What every call gets:

- **Authentication**: ``authorization: Bearer <token>`` metadata (or none, for mTLS with a registered certificate).
- **A deadline**: ``default_timeout`` (30 s) or, for streams, imports and chain verification, ``stream_timeout``
  (600 s); every method takes ``timeout=``. Retries share the one deadline.
- **A request id**: ``x-request-id`` (the audit log records it); every method takes ``request_id=``, else a uuid4
  is generated once per call. Where the request has an idempotency key (``CreateCustomer``, ``GrantConsent``,
  ``WithdrawConsent``) the same id is that key, and it is sent again unchanged on every retry.
- **Retries** of UNAVAILABLE (``RetryPolicy``: 4 attempts, exponential backoff with full jitter from 0.1 s up to 2 s),
  only for calls that are safe to repeat:

  ==========================  ===============================================================================
  retried                     why it is safe
  ==========================  ===============================================================================
  customers.create            idempotent on ``request_id``: a repeat returns the customer created first
  consent.grant / withdraw    idempotent on ``request_id``
  purchases.record            idempotent on (source, order_id)
  purchases.record_many       idempotent on (source, order_id); only when given a sequence (a list, a tuple)
  imports.customers           re-sending a file merges, never duplicates; only when given a sequence
  dsar.lift_restriction,      set a flag to a value
  dsar.set_legal_hold
  keys.set_min_decryption_..  sets a value
  keys.rewrap_keys            resumable compare-and-set pass; before its first progress message
  audit.get_checkpoint        signs the head once more
  every read                  customers.get/find/list, consent.list/history, dsar.get/list, keys.status,
                              audit.verify_chain, and, before their first response, audit.query_events and
                              analytics.export_purchases
  ==========================  ===============================================================================

  Never retried: customers.update (its ``expected_version`` is spent by a lost success: ABORTED), customers.merge and
  split, dsar.open, verify, reject, export_data, erase, rectify and restrict (each moves a request on), and
  keys.rotate_kek (a repeat would create another KEK version).
- **Typed exceptions** (``piivault.client.errors``): ``InvalidArgument.field_violations`` lists (field, rule) from
  google.rpc.BadRequest, ``AlreadyExists.existing_customer_id`` names the owner of the identifier, ``reason`` is the
  google.rpc.ErrorInfo reason (``CONSENT_REQUIRED``, ``PURPOSE_NOT_ALLOWED``, ...).

Request and response messages are the generated ones (``piivault.v1.customers_pb2`` and its siblings), typed by
their ``.pyi`` stubs; methods return the response message of their RPC.
"""

from piivault.client.client import PiiVault, TlsConfig, is_loopback
from piivault.client.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PiiVaultError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from piivault.client.retry import RetryPolicy

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
    "PiiVault",
    "PiiVaultError",
    "ResourceExhausted",
    "RetryPolicy",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "is_loopback",
]
