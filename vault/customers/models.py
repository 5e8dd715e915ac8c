"""Customer domain types. Values are personal data, so ``repr`` lists which fields are set, never what they hold."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum


class Gender(StrEnum):
    UNSPECIFIED = "unspecified"
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"


class IdentifierKind(StrEnum):
    """The identifiers a customer can be found by; each has a blind index, unique among live customers."""

    MOBILE = "mobile"
    EMAIL = "email"
    NATIONAL_ID = "national_id"
    MEMBER_ID = "member_id"
    EXTERNAL_REF = "external_ref"


# The kinds held in a field of their own, with that field's name (an enum's ``.value`` is a descriptor call, and
# ``identifiers`` runs several times for every created or imported row).
_FIELD_KINDS = tuple(
    (kind, kind.value)
    for kind in (IdentifierKind.MOBILE, IdentifierKind.EMAIL, IdentifierKind.NATIONAL_ID, IdentifierKind.MEMBER_ID)
)
_EXTERNAL_REF = IdentifierKind.EXTERNAL_REF


@dataclass(frozen=True, slots=True, repr=False)
class ExternalRef:
    source: str
    id: str

    def __repr__(self) -> str:
        return f"ExternalRef(source={self.source!r}, id=[pii])"


@dataclass(frozen=True, slots=True, repr=False)
class Profile:
    """The personal fields of a customer. Empty string / empty container means "not given"."""

    name: str = ""
    mobile: str = ""
    email: str = ""
    national_id: str = ""
    birth_date: str = ""
    gender: Gender = Gender.UNSPECIFIED
    address: str = ""
    member_id: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    external_refs: tuple[ExternalRef, ...] = ()

    def __repr__(self) -> str:
        present = [name for name in PERSONAL_FIELDS if not is_empty(getattr(self, name))]
        return f"Profile(set={present}, values=[pii])"

    def with_fields(self, other: Profile, names: tuple[str, ...]) -> Profile:
        """This profile with ``names`` taken from ``other``."""
        return replace(self, **{name: getattr(other, name) for name in names})

    def identifiers(self) -> list[tuple[IdentifierKind, str]]:
        """The canonical identifiers this profile can be found by."""
        found = [(kind, value) for kind, name in _FIELD_KINDS if (value := getattr(self, name))]
        found.extend((_EXTERNAL_REF, f"{ref.source}:{ref.id}") for ref in self.external_refs)
        return found


PERSONAL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Profile))
IDENTIFIER_FIELDS = {"mobile", "email", "national_id", "member_id", "external_refs"}


def fill_gaps(stored: Profile, incoming: Profile) -> tuple[Profile, tuple[str, ...], tuple[str, ...]]:
    """``stored`` with the fields it lacks taken from ``incoming`` (external refs and attribute keys are united), the
    names of the fields filled, and of the fields whose values differ (kept as stored): how imports and merges join
    two records of one person without overwriting anything."""
    patch: dict[str, object] = {}
    filled: list[str] = []
    conflicts: list[str] = []
    for name in PERSONAL_FIELDS:
        mine, theirs = getattr(stored, name), getattr(incoming, name)
        if is_empty(theirs) or theirs == mine:
            continue
        if name == "external_refs":
            added = tuple(ref for ref in theirs if ref not in mine)
            if added:
                patch[name] = (*mine, *added)
                filled.append(name)
        elif name == "attributes":
            new_keys = {key: value for key, value in theirs.items() if key not in mine}
            if new_keys:
                patch[name] = {**mine, **new_keys}
                filled.append(name)
            if any(key in mine and mine[key] != value for key, value in theirs.items()):
                conflicts.append(name)
        elif is_empty(mine):
            patch[name] = theirs
            filled.append(name)
        else:
            conflicts.append(name)
    return replace(stored, **patch), tuple(filled), tuple(conflicts)  # type: ignore[arg-type]


def is_empty(value: object) -> bool:
    return value in ("", Gender.UNSPECIFIED, None) or value == {} or value == ()


# What ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), …)`` does, without building an encoder per call
# (that was most of a field's encoding cost). The stored plaintext format must not change.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def encode_field(name: str, value: object) -> bytes:
    """The plaintext bytes that get encrypted for one field."""
    if name == "attributes":
        assert isinstance(value, dict)
        return _COMPACT_SORTED.encode(value).encode()
    if name == "external_refs":
        assert isinstance(value, tuple)
        return _COMPACT.encode([[ref.source, ref.id] for ref in value]).encode()
    assert isinstance(value, str)
    return value.encode()


def decode_field(name: str, plaintext: bytes) -> object:
    text = plaintext.decode()
    if name == "attributes":
        return dict(json.loads(text))
    if name == "external_refs":
        return tuple(ExternalRef(source, ref_id) for source, ref_id in json.loads(text))
    if name == "gender":
        return Gender(text)
    return text


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    version: int
    profile: Profile
    create_time: dt.datetime
    update_time: dt.datetime
    masked_fields: tuple[str, ...] = ()  # fields whose value in ``profile`` is a masked form, not the original
