"""Enforcement: for one caller, purpose and customer, which personal fields may be shown in clear — or a refusal.

The rules, in the order they apply:

1. The caller names a registered purpose its role may use; otherwise the call is refused (``PurposeNotAllowed``).
2. A consent-based purpose needs the customer's current consent, given by a guardian while the customer is younger than
   14 (PIPL art. 31); otherwise the read is refused (``ConsentRequired`` / ``GuardianRequired``). Contract and
   legal-obligation purposes never look at optional consent (art. 16).
3. A field is clear when both the purpose and the role allow it; a sensitive field additionally needs the separate
   consent for that purpose (art. 29), except under a legal obligation. Every other field comes back masked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from audit.events import Caller
from consent.models import NO_CONSENT, ConsentScope, Standing
from consent.purposes import Purpose, PurposeRegistry
from vault.customers.models import Profile
from vault.errors import ConsentRequired, GuardianRequired, InvalidArgument, PurposeNotAllowed

ADULT_AGE = 14  # PIPL art. 31: personal information of a minor under 14 needs a parent's or guardian's consent


def birth_date_of(profile: Profile) -> dt.date | None:
    """From the birth date, or else from the one embedded in the national id (digits 7-14 of the 18)."""
    text = profile.birth_date
    if not text and len(profile.national_id) == 18:
        digits = profile.national_id[6:14]
        text = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def is_minor(profile: Profile, today: dt.date) -> bool:
    """Younger than 14 on ``today``. Unknown age counts as adult: the vault cannot ask, the collecting system must."""
    born = birth_date_of(profile)
    if born is None:
        return False
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return years < ADULT_AGE


class AccessPolicy:
    def __init__(
        self,
        registry: PurposeRegistry,
        role_fields: Mapping[str, frozenset[str]],
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    ) -> None:
        self.registry = registry
        self._role_fields = role_fields
        self._today = today

    def purpose_of(self, caller: Caller) -> Purpose:
        """The registered purpose the caller named, if its role may use it."""
        if not caller.purpose:
            raise InvalidArgument.single("purpose", "is required: name a purpose from the registry")
        purpose = self.registry.get(caller.purpose)
        if purpose is None:
            raise InvalidArgument.single("purpose", "must be a purpose from the registry (see `piivault purposes`)")
        if caller.role not in purpose.roles:
            raise PurposeNotAllowed()
        return purpose

    @staticmethod
    def consults_consent(purpose: Purpose) -> bool:
        """Whether a read under ``purpose`` needs the customers' consent records at all."""
        return purpose.requires_consent or purpose.needs_separate_consent

    def clear_fields(
        self, role: str, purpose: Purpose, customer_id: str, profile: Profile, standing: Standing = NO_CONSENT
    ) -> frozenset[str]:
        """The fields of this customer the caller may see in clear; raises when the read must be refused."""
        minor = (purpose.requires_consent or purpose.needs_separate_consent) and is_minor(profile, self._today())
        if purpose.requires_consent and not standing.has(ConsentScope.STANDARD, guardian=False):
            raise ConsentRequired((customer_id,))
        if purpose.requires_consent and minor and not standing.has(ConsentScope.STANDARD, guardian=True):
            raise GuardianRequired((customer_id,))
        clear = purpose.fields & self._role_fields.get(role, frozenset())
        if purpose.needs_separate_consent and not standing.has(ConsentScope.SENSITIVE, guardian=minor):
            clear -= purpose.sensitive_fields
        return clear

    def today(self) -> dt.date:
        return self._today()
