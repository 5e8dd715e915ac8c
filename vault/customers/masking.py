"""Masked forms of personal fields, for callers whose purpose or role may not see a field in clear.

The shapes are the ones Chinese retail staff and customers recognise (``138****8000``, ``张*``,
``1101**********123X``, ``z***@example.com``): enough to confirm "is this the right customer?" with the customer in
front of you, not enough to contact or impersonate them. A masked value never passes validation as the original
(masked phones and id numbers fail their checks), so it cannot be written back by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vault.customers.models import PERSONAL_FIELDS, ExternalRef, Gender, Profile, is_empty

STAR = "*"
HIDDEN = "****"


def _keep(value: str, head: int, tail: int) -> str:
    """``value`` with all but ``head`` leading and ``tail`` trailing characters starred; short values fully."""
    if len(value) <= head + tail:
        return STAR * len(value)
    return value[:head] + STAR * (len(value) - head - tail) + value[len(value) - tail :]


def mask_name(value: str) -> str:
    return value[:1] + STAR * max(len(value) - 1, 1)


def mask_mobile(value: str) -> str:
    if value.startswith("+86") and len(value) == 14:
        national = value[3:]
        return national[:3] + "****" + national[-4:]
    # Other regions: the country prefix and the last two digits.
    return _keep(value, 3, 2)


def mask_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at:
        return _keep(value, 1, 0)
    return local[:1] + "***@" + domain


def mask_national_id(value: str) -> str:
    # Not the common 4+4 form (1101**********123X): next to a birth date shown in clear (customer_service shows one),
    # the two hidden district digits are all that is missing, and the check digit and the list of region codes give
    # them back. The province and the check character leave some ten thousand candidates.
    return _keep(value, 2, 1)


def mask_birth_date(value: str) -> str:
    return value[:4] + "-**-**" if len(value) == 10 else HIDDEN


def mask_address(value: str) -> str:
    # Province and city (the first few characters of a Chinese address) stay; the street and number go.
    return value[: min(6, len(value) // 2)] + HIDDEN


def mask_member_id(value: str) -> str:
    return _keep(value, 0, 4)


_TEXT_MASKS: dict[str, Callable[[str], str]] = {
    "name": mask_name,
    "mobile": mask_mobile,
    "email": mask_email,
    "national_id": mask_national_id,
    "birth_date": mask_birth_date,
    "address": mask_address,
    "member_id": mask_member_id,
}


def _masked(name: str, value: object) -> object:
    if name == "gender":
        return Gender.UNSPECIFIED
    if name == "attributes":
        assert isinstance(value, dict)
        return dict.fromkeys(value, HIDDEN)
    if name == "external_refs":
        assert isinstance(value, tuple)
        return tuple(ExternalRef(ref.source, _keep(ref.id, 0, 4)) for ref in value)
    assert isinstance(value, str)
    return _TEXT_MASKS[name](value)


def mask_profile(profile: Profile, clear: frozenset[str]) -> tuple[Profile, tuple[str, ...]]:
    """The profile with every set field outside ``clear`` masked, and the names of the fields that were masked."""
    masked = {
        name: _masked(name, getattr(profile, name))
        for name in PERSONAL_FIELDS
        if name not in clear and not is_empty(getattr(profile, name))
    }
    if not masked:
        return profile, ()
    return replace(profile, **masked), tuple(masked)  # type: ignore[arg-type]
