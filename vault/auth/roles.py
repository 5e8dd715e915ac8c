"""The roles a principal can hold, and which personal fields each role may ever see in clear.

A purpose (``consent.purposes``) narrows this further: a field is shown in clear only when both the caller's role and
the purpose allow it. Roles without fields never receive a personal field at all — the analyst works on pseudonymised
data, the auditor on the audit log, and the administrator runs keys and tokens without reading customers.
"""

from __future__ import annotations

from vault.customers.models import PERSONAL_FIELDS

ROLES = ("service", "support", "marketing", "analyst", "dpo", "auditor", "admin")

_ALL = frozenset(PERSONAL_FIELDS)

ROLE_FIELDS: dict[str, frozenset[str]] = {
    # Integrating systems (POS, web shop, CRM) act for many purposes; the purpose decides.
    "service": _ALL,
    # Staff at a counter or in the call centre: identity numbers stay masked even where a purpose would allow them.
    "support": _ALL - {"national_id"},
    "marketing": frozenset({"name", "mobile", "email", "gender", "birth_date", "member_id", "attributes"}),
    "analyst": frozenset(),
    "dpo": _ALL,
    "auditor": frozenset(),
    "admin": frozenset(),
}
