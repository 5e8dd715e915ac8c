"""Masked forms: the shapes from the issue, and no masked value that still holds the original."""

from __future__ import annotations

import pytest

from tests.support.people import People, profile_of
from vault.customers.masking import (
    mask_address,
    mask_birth_date,
    mask_email,
    mask_mobile,
    mask_name,
    mask_national_id,
    mask_profile,
)
from vault.customers.models import PERSONAL_FIELDS, Gender, is_empty
from vault.customers.validation import canonical_profile


@pytest.mark.parametrize(
    ("mask", "value", "expected"),
    [
        (mask_mobile, "+8613800138000", "138****8000"),
        (mask_name, "张三", "张*"),
        (mask_name, "欧阳娜娜", "欧***"),
        (mask_national_id, "11010519491231123X", "11***************X"),
        (mask_email, "zhangsan@example.com", "z***@example.com"),
        (mask_birth_date, "1990-05-17", "1990-**-**"),
        (mask_address, "北京市朝阳区建国路88号", "北京市朝阳区****"),
        (mask_mobile, "+447911123456", "+44********56"),
    ],
)
def test_mask_shapes(mask: object, value: str, expected: str) -> None:
    assert callable(mask)
    assert mask(value) == expected


def test_masked_profile_keeps_no_original_value_and_lists_what_it_masked() -> None:
    profile = profile_of(People(seed=3).next())
    masked, names = mask_profile(profile, frozenset({"mobile"}))
    assert masked.mobile == profile.mobile
    assert set(names) == set(PERSONAL_FIELDS) - {"mobile"}
    for name in names:
        original, shown = getattr(profile, name), getattr(masked, name)
        assert shown != original
        if isinstance(original, str) and len(original) > 4:
            assert original not in str(shown)
    assert masked.gender is Gender.UNSPECIFIED
    assert set(masked.attributes) == set(profile.attributes)
    assert not any(value in str(masked.attributes) for value in profile.attributes.values())


def test_empty_fields_are_not_reported_masked() -> None:
    profile = profile_of(People(seed=4).next(), email="", attributes={})
    _, names = mask_profile(profile, frozenset())
    assert "email" not in names and "attributes" not in names
    assert all(not is_empty(getattr(profile, name)) for name in names)


def test_a_masked_phone_or_id_cannot_be_written_back_as_valid() -> None:
    from vault.errors import InvalidArgument

    profile = profile_of(People(seed=5).next())
    masked, _ = mask_profile(profile, frozenset())
    for name in ("mobile", "national_id"):
        with pytest.raises(InvalidArgument):
            canonical_profile(masked, only=frozenset({name}))


def test_a_masked_national_id_next_to_a_clear_birth_date_does_not_give_the_id_back() -> None:
    """Enumerate every id consistent with the masked form, the clear birth date and a valid check digit."""
    from stdnum.cn import ric

    profile = profile_of(People(seed=6).next())
    masked, _ = mask_profile(profile, frozenset({"birth_date"}))
    shown, born = masked.national_id, profile.birth_date.replace("-", "")
    candidates = 0
    for region in range(10_000):  # the 4 hidden region digits after the 2 shown
        for sequence in range(1000):
            body = f"{shown[:2]}{region:04d}{born}{sequence:03d}"
            if ric.calc_check_digit(body) == shown[-1]:
                candidates += 1
                if candidates > 1000:
                    return  # far from unique
    raise AssertionError(f"only {candidates} ids fit the masked form")
