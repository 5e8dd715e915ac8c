"""Which roles may call which RPC. Deny by default: a method missing from this table is refused to everyone.

Refined per field and purpose in the access-control work; for now integrating systems (``service``) and ``admin``
use CustomerService.
"""

from __future__ import annotations

from vault.auth.tokens import Principal
from vault.errors import PermissionDenied

_CUSTOMER_WRITERS = frozenset({"service", "admin"})
_ADMIN = frozenset({"admin"})
_AUDITORS = frozenset({"auditor", "admin"})

ALLOWED_ROLES: dict[str, frozenset[str]] = {
    "/piivault.v1.CustomerService/CreateCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/GetCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/UpdateCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/FindCustomers": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/ListCustomers": _CUSTOMER_WRITERS,
    "/piivault.v1.KeyService/GetKeyStatus": _ADMIN,
    "/piivault.v1.KeyService/RotateKek": _ADMIN,
    "/piivault.v1.KeyService/RewrapKeys": _ADMIN,
    "/piivault.v1.KeyService/SetMinDecryptionVersion": _ADMIN,
    "/piivault.v1.AuditService/QueryEvents": _AUDITORS,
    "/piivault.v1.AuditService/VerifyChain": _AUDITORS,
    "/piivault.v1.AuditService/GetCheckpoint": _AUDITORS,
}

# Standard infrastructure services that carry no personal data; load balancers and `buf curl` call them unauthenticated.
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def authorize(method: str, principal: Principal) -> None:
    if principal.role not in ALLOWED_ROLES.get(method, frozenset()):
        raise PermissionDenied()
