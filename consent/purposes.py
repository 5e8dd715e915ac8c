"""The purpose registry: why personal data may be processed, on which legal basis, which fields, and by whom.

The defaults live in ``purposes.toml`` beside this module; ``PIIVAULT_PURPOSES_FILE`` names a file that replaces them
as a whole (the effective registry is then exactly what a reviewer reads in that one file). A registry is checked
completely when loaded, so a server never starts with a purpose it cannot enforce.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from vault.auth.roles import ROLES
from vault.customers.models import PERSONAL_FIELDS

# Sensitive personal information (PIPL art. 28): shown in clear only with a separate consent (art. 29).
SENSITIVE_FIELDS = frozenset({"national_id"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_KEYS = frozenset({"legal_basis", "requires_consent", "fields", "roles", "retention_days", "description"})


class RegistryError(Exception):
    """The registry file is malformed. The message names the purpose and the key."""


class LegalBasis(StrEnum):
    CONTRACT = "contract"
    CONSENT = "consent"
    LEGAL_OBLIGATION = "legal_obligation"


@dataclass(frozen=True, slots=True)
class Purpose:
    name: str
    legal_basis: LegalBasis
    fields: frozenset[str]
    roles: frozenset[str]
    retention_days: int
    description: str = ""

    @property
    def requires_consent(self) -> bool:
        return self.legal_basis is LegalBasis.CONSENT

    @property
    def sensitive_fields(self) -> frozenset[str]:
        return self.fields & SENSITIVE_FIELDS

    @property
    def needs_separate_consent(self) -> bool:
        """Whether sensitive fields need the customer's separate consent under this purpose (PIPL art. 29).

        Not under a legal obligation (art. 13(3)): answering a data-subject request or a court order must not depend on
        a consent the customer can withdraw."""
        return bool(self.sensitive_fields) and self.legal_basis is not LegalBasis.LEGAL_OBLIGATION


class PurposeRegistry:
    def __init__(self, purposes: Mapping[str, Purpose]) -> None:
        self._purposes = dict(purposes)

    def __iter__(self) -> Iterator[Purpose]:
        return iter(self._purposes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._purposes

    def get(self, name: str) -> Purpose | None:
        return self._purposes.get(name)

    @classmethod
    def default(cls) -> PurposeRegistry:
        text = resources.files("consent").joinpath("purposes.toml").read_text(encoding="utf-8")
        return cls.parse(text)

    @classmethod
    def load(cls, path: Path | None) -> PurposeRegistry:
        if path is None:
            return cls.default()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise RegistryError(f"cannot read the purposes file ({type(error).__name__})") from None
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> PurposeRegistry:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise RegistryError(f"the purposes file is not valid TOML: {error}") from None
        table = document.get("purposes")
        if not isinstance(table, dict) or not table:
            raise RegistryError("the purposes file must define at least one [purposes.NAME] table")
        return cls({name: _purpose(name, entry) for name, entry in table.items()})


def _purpose(name: str, entry: object) -> Purpose:
    where = f"purposes.{name}"
    if not (1 <= len(name) <= 64 and set(name) <= _NAME_CHARS and name[0].isalpha()):
        raise RegistryError(
            f"{where}: a purpose name is 1-64 lower-case letters, digits or '_', starting with a letter"
        )
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: must be a table")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise RegistryError(f"{where}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    try:
        basis = LegalBasis(str(entry.get("legal_basis")))
    except ValueError:
        raise RegistryError(f"{where}.legal_basis: must be one of {[b.value for b in LegalBasis]}") from None
    requires_consent = entry.get("requires_consent", basis is LegalBasis.CONSENT)
    if requires_consent is not (basis is LegalBasis.CONSENT):
        raise RegistryError(
            f"{where}.requires_consent: must be true exactly when legal_basis is 'consent' "
            "(a contract or legal-obligation purpose may not depend on optional consent, PIPL art. 16)"
        )
    fields = _names(entry, "fields", where, PERSONAL_FIELDS)
    roles = _names(entry, "roles", where, ROLES)
    retention = entry.get("retention_days")
    if not isinstance(retention, int) or isinstance(retention, bool) or not 1 <= retention <= 36500:
        raise RegistryError(f"{where}.retention_days: must be a whole number of days from 1 to 36500")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise RegistryError(f"{where}.description: must be a string")
    return Purpose(name, basis, fields, roles, retention, description)


def _names(entry: dict[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> frozenset[str]:
    value = entry.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RegistryError(f"{where}.{key}: must be a list of strings")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RegistryError(f"{where}.{key}: unknown names {unknown}; allowed: {list(allowed)}")
    return frozenset(value)
