from __future__ import annotations

import pytest

from vault.customers.models import ExternalRef, Profile
from vault.customers.validation import canonical_profile, require_identifier
from vault.errors import InvalidArgument


def violations(profile: Profile) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        canonical_profile(profile)
    return {v.field: v.rule for v in caught.value.violations}


def test_all_violations_are_reported_at_once_without_values() -> None:
    bad = Profile(name="李\u202e娜", mobile="12", email="nope", birth_date="1990-02-30", national_id="123")
    found = violations(bad)
    assert set(found) == {
        "customer.name",
        "customer.mobile",
        "customer.email",
        "customer.birth_date",
        "customer.national_id",
    }
    for rule in found.values():
        for value in ("李", "nope", "1990-02-30", "123"):
            assert value not in rule


def test_attributes_and_external_refs_rules() -> None:
    found = violations(
        Profile(
            mobile="13800138000",
            attributes={"Bad Key": "x", "ok": "a\x00b"},
            external_refs=(ExternalRef("pos", "1"), ExternalRef("pos", "1"), ExternalRef("", "2")),
        )
    )
    assert found.keys() == {
        "customer.attributes",
        "customer.attributes[ok]",
        "customer.external_refs[1]",
        "customer.external_refs[2]",
    }


def test_canonical_profile_normalises() -> None:
    profile = canonical_profile(
        Profile(
            name=" 王芳 ", mobile="+86 139-0000-0001", email="A@Example.com", external_refs=(ExternalRef("POS", " 7 "),)
        )
    )
    assert profile.name == "王芳"
    assert profile.mobile == "+8613900000001"
    assert profile.email == "a@example.com"
    assert profile.external_refs == (ExternalRef("pos", "7"),)


def test_a_customer_needs_an_identifier() -> None:
    with pytest.raises(InvalidArgument) as caught:
        require_identifier(Profile(name="王芳"))
    assert caught.value.violations[0].field == "customer"


def test_profile_repr_hides_values() -> None:
    profile = Profile(name="王芳", mobile="+8613900000001")
    assert "王芳" not in repr(profile) and "139" not in repr(profile)
    assert "mobile" in repr(profile)
