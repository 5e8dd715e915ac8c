from __future__ import annotations

import datetime as dt
import random

import phonenumbers
import pytest
from stdnum.cn import ric

from tests.support.people import national_id
from vault.customers import identifiers as ids

CANONICAL_MOBILE = "+8613800138000"


def _parsed_mobile(text: str) -> str | None:
    """The parsing path of ``canonical_mobile`` on its own: phonenumbers' parse, validity and type checks."""
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    mobile = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in mobile:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_the_direct_path_for_plain_mobiles_agrees_with_parsing_on_every_five_digit_prefix() -> None:
    """11 digits from 1, with or without +86, skip phonenumbers' parse. Parsing strips carrier codes such as 17951 or
    12593 when what remains is a number, so every five-digit prefix is tried (with a random rest, written in turn in
    each form the direct path takes): accepted or refused, the answer must be the parse path's."""
    rng = random.Random(7)
    forms = (
        lambda d: d,
        lambda d: "+86" + d,
        lambda d: f"0086 {d[:3]} {d[3:7]} {d[7:]}",
        lambda d: f"+86 {d[:3]}-{d[3:7]}-{d[7:]}",
        lambda d: "".join(chr(ord(c) + 0xFEE0) for c in d),
    )
    accepted = 0
    for prefix in range(100_000):
        digits = f"1{prefix:05d}{rng.randrange(100_000):05d}"
        written = forms[prefix % len(forms)](digits)
        expected = _parsed_mobile(digits)
        try:
            got: str | None = ids.canonical_mobile(written)
        except ids.IdentifierError:
            got = None
        assert got == expected, f"prefix {prefix:05d}"  # the prefix only: a synthetic number, but still not printed
        accepted += got is not None
    assert 30_000 < accepted < 100_000  # both answers occur: the comparison covered valid and invalid numbers


@pytest.mark.parametrize(
    "written",
    [
        "13800138000",
        "+86 138-0013-8000",
        "0086 13800138000",
        "１３８００１３８０００",
        "+8613800138000",
        "(+86) 138 0013 8000",
        " 138.0013.8000 ",
        "＋８６　１３８００１３８０００",
    ],
)
def test_mobile_forms_share_one_canonical_form(written: str) -> None:
    assert ids.canonical_mobile(written) == CANONICAL_MOBILE


@pytest.mark.parametrize(
    "written",
    [
        "٠١٣٨٠٠١٣٨٠٠٠",  # Arabic-Indic digits: NFKC keeps them, we refuse them
        "1380013\u200b8000",  # zero-width space
        "1380013800",  # too short
        "010-12345678",  # a Beijing landline is not a mobile
        "13800138000x",
        "",
        "+86 138 0013 8000 ext. 5",
    ],
)
def test_mobile_rejects_what_it_cannot_read_unambiguously(written: str) -> None:
    with pytest.raises(ids.IdentifierError) as caught:
        ids.canonical_mobile(written)
    assert written.strip() == "" or written not in caught.value.rule


def test_email_is_trimmed_and_lower_cased() -> None:
    assert ids.canonical_email("  Zhang.Wei@Example.COM ") == "zhang.wei@example.com"
    for bad in ("no-at-sign", "a@b", "a b@example.com", "x@" + "a" * 300 + ".com"):
        with pytest.raises(ids.IdentifierError):
            ids.canonical_email(bad)


VALID_ID = national_id(dt.date(1990, 3, 7), 123)


def test_national_id_valid_with_lower_case_x_and_spaces() -> None:
    with_x = next(
        national_id(dt.date(1985, 1, 1) + dt.timedelta(days=d), 5)
        for d in range(400)
        if national_id(dt.date(1985, 1, 1) + dt.timedelta(days=d), 5).endswith("X")
    )
    assert ids.canonical_national_id(with_x.lower()) == with_x
    assert ids.canonical_national_id(f" {VALID_ID[:6]} {VALID_ID[6:]} ") == VALID_ID


def test_every_single_digit_mutation_of_a_valid_id_is_rejected() -> None:
    symbols = "0123456789X"
    for position in range(18):
        for symbol in symbols:
            if symbol == VALID_ID[position] or (symbol == "X" and position < 17):
                continue
            mutated = VALID_ID[:position] + symbol + VALID_ID[position + 1 :]
            with pytest.raises(ids.IdentifierError):
                ids.canonical_national_id(mutated)


def test_checksum_violation_names_the_rule_not_the_value() -> None:
    broken = VALID_ID[:17] + ("1" if VALID_ID[17] != "1" else "2")
    with pytest.raises(ids.IdentifierError) as caught:
        ids.canonical_national_id(broken)
    assert "check digit" in caught.value.rule
    assert broken not in caught.value.rule


def test_unknown_region_code_is_not_a_reason_to_reject() -> None:
    body = "990105" + "19900307" + "123"
    unknown_region = body + ric.calc_check_digit(body + "0")
    assert ids.canonical_national_id(unknown_region) == unknown_region


def test_legacy_15_digit_id_is_upgraded() -> None:
    legacy = "110105" + "900307" + "123"
    upgraded = ids.canonical_national_id(legacy)
    assert upgraded[:17] == "11010519900307123" and len(upgraded) == 18
    assert ric.calc_check_digit(upgraded) == upgraded[17]


def test_impossible_and_future_birth_dates_are_rejected() -> None:
    for birth in ("19900230", "20991231"):
        body = "110105" + birth + "123"
        with pytest.raises(ids.IdentifierError):
            ids.canonical_national_id(body + ric.calc_check_digit(body + "0"))


def test_member_id_and_external_ref_rules() -> None:
    assert ids.canonical_member_id(" M0001 ") == "M0001"
    assert ids.canonical_ref_source("POS") == "pos"
    for bad in ("", "has space", "a" * 65, "会员"):
        with pytest.raises(ids.IdentifierError):
            ids.canonical_member_id(bad)
    with pytest.raises(ids.IdentifierError):
        ids.canonical_ref_source("pos:shanghai")
