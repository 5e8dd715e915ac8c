"""Which roles may call which RPC. Deny by default: a method missing from this table is refused to everyone.

This is the first gate. Reads of personal data then pass the purpose gate (``consent.decisions``): the purpose must be
one the role may use, consent must be current where the purpose needs it, and fields outside the purpose and the role
(``vault.auth.roles.ROLE_FIELDS``) come back masked.
"""

from __future__ import annotations

from vault.auth.tokens import Principal
from vault.errors import PermissionDenied

_CUSTOMER_WRITERS = frozenset({"service", "support"})
_CUSTOMER_READERS = frozenset({"service", "support", "marketing", "dpo"})
# Listing walks the whole customer base: integrating systems, campaigns (consented customers only) and the DPO.
_CUSTOMER_LISTERS = frozenset({"service", "marketing", "dpo"})
_CONSENT_RECORDERS = frozenset({"service", "support", "dpo"})
_CONSENT_READERS = frozenset({"service", "support", "marketing", "dpo"})
_DPO = frozenset({"dpo"})
_DSAR_METHODS = (
    "OpenRequest",
    "VerifyRequest",
    "RejectRequest",
    "GetRequest",
    "ListRequests",
    "ExportData",
    "EraseCustomer",
    "RectifyCustomer",
    "RestrictProcessing",
    "LiftRestriction",
    "SetLegalHold",
)
_ADMIN = frozenset({"admin"})
_AUDITORS = frozenset({"auditor", "admin"})

ALLOWED_ROLES: dict[str, frozenset[str]] = {
    "/piivault.v1.CustomerService/CreateCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/GetCustomer": _CUSTOMER_READERS,
    "/piivault.v1.CustomerService/UpdateCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/FindCustomers": _CUSTOMER_READERS,
    "/piivault.v1.CustomerService/ListCustomers": _CUSTOMER_LISTERS,
    # Bulk matching of identifiers: integrating systems only, within their lookup budget.
    "/piivault.v1.CustomerService/ImportCustomers": frozenset({"service"}),
    "/piivault.v1.CustomerService/MergeCustomers": _CUSTOMER_WRITERS,
    "/piivault.v1.CustomerService/SplitCustomer": _CUSTOMER_WRITERS,
    "/piivault.v1.ConsentService/GrantConsent": _CONSENT_RECORDERS,
    "/piivault.v1.ConsentService/WithdrawConsent": _CONSENT_RECORDERS,
    "/piivault.v1.ConsentService/ListConsents": _CONSENT_READERS,
    "/piivault.v1.ConsentService/GetConsentHistory": _CONSENT_READERS,
    **{f"/piivault.v1.DsarService/{name}": _DPO for name in _DSAR_METHODS},
    "/piivault.v1.PurchaseService/RecordPurchase": _CUSTOMER_WRITERS,
    "/piivault.v1.PurchaseService/RecordPurchases": _CUSTOMER_WRITERS,
    "/piivault.v1.AnalyticsService/ExportPurchases": frozenset({"analyst"}),
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
