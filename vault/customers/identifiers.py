"""Canonical forms of the identifiers customers are found by.

The same person arrives as ``13800138000``, ``+86 138-0013-8000``, ``0086 13800138000`` or in fullwidth digits from a
Chinese IME; all must reach the same blind index, and anything that cannot be read unambiguously is rejected rather
than guessed. Each function returns the canonical text or raises ``IdentifierError`` with the rule that was broken
(never the value).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import phonenumbers
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumValidationError

DEFAULT_REGION = "CN"
_MOBILE_TYPES = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
_PHONE_ALLOWED = re.compile(r"[0-9+()\-. ]+")
_CN_MOBILE_SHAPE = re.compile(r"(?:\+86)?(1[0-9]{10})")  # after spaces and dashes are dropped
_EMAIL = re.compile(
    r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
_REF_SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_LEGACY_ID_CENTURY = "19"  # 15-digit ids were issued 1984-1999 to people born in the 1900s


class IdentifierError(ValueError):
    """An identifier breaks a rule; ``rule`` is safe to show (it never contains the value)."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def canonical_mobile(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """E.164. NFKC folds fullwidth digits; digits of other scripts (Arabic-Indic, Devanagari...) are rejected."""
    text = _nfkc(raw)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text or not _PHONE_ALLOWED.fullmatch(text):
        raise IdentifierError("must contain only ASCII digits, spaces, '+', '-', '.', or parentheses")
    plain = _CN_MOBILE_SHAPE.fullmatch(text.replace(" ", "").replace("-", "")) if default_region == "CN" else None
    if plain is not None:
        # The common case, 11 digits from 1 with or without +86: what parsing would find is plain, so the number is
        # built directly (parsing was half the cost) and judged by phonenumbers' own type check, as below.
        # tests/unit/test_identifiers.py compares this with the parsing path over every five-digit prefix.
        number = phonenumbers.PhoneNumber(country_code=86, national_number=int(plain.group(1)))
        if phonenumbers.number_type(number) not in _MOBILE_TYPES:
            raise IdentifierError("must be a valid mobile number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise IdentifierError("must be a phone number") from None
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise IdentifierError("must be a valid mobile number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def canonical_email(raw: str) -> str:
    text = _nfkc(raw).lower()
    if len(text) > 254 or not _EMAIL.fullmatch(text) or len(text.partition("@")[0]) > 64:
        raise IdentifierError("must be an e-mail address like name@example.com")
    return text


def canonical_national_id(raw: str, today: dt.date | None = None) -> str:
    """18-character resident id with a valid ISO 7064 MOD 11-2 check digit and a real, past birth date.

    The region code is deliberately not checked: region codes are re-organised over time and python-stdnum's table
    is incomplete, so a valid person would be turned away. 15-digit legacy ids are upgraded to 18.
    """
    text = _nfkc(raw).replace(" ", "").upper()
    if len(text) == 15 and text.isascii() and text.isdigit():
        body = text[:6] + _LEGACY_ID_CENTURY + text[6:]
        text = body + ric.calc_check_digit(body + "0")  # stdnum expects a placeholder check digit
    if len(text) != 18 or not text.isascii() or not text[:17].isdigit() or not (text[17].isdigit() or text[17] == "X"):
        raise IdentifierError("must be 18 characters: 17 digits and a check digit (0-9 or X), or a 15-digit legacy id")
    if text[17] != ric.calc_check_digit(text):
        raise IdentifierError("check digit does not match (ISO 7064 MOD 11-2)")
    try:
        birth = ric.get_birth_date(text)
    except StdnumValidationError:
        raise IdentifierError("must contain a real birth date") from None
    if birth > (today or dt.date.today()) or birth.year < 1900:
        raise IdentifierError("must contain a birth date between 1900 and today")
    return text


def canonical_member_id(raw: str) -> str:
    text = _nfkc(raw)
    if not _MEMBER_ID.fullmatch(text):
        raise IdentifierError("must be 1-64 ASCII letters, digits or '_.:/-', starting with a letter or digit")
    return text


def canonical_ref_source(raw: str) -> str:
    text = _nfkc(raw).lower()
    if not _REF_SOURCE.fullmatch(text):
        raise IdentifierError("must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter")
    return text


def canonical_ref_id(raw: str) -> str:
    text = _nfkc(raw)
    if not 1 <= len(text) <= 128 or not all(ch.isprintable() for ch in text):
        raise IdentifierError("must be 1-128 printable characters")
    return text


def external_ref_key(source: str, ref_id: str) -> str:
    """The blind-indexed form of an external ref: ``source:id`` (source cannot contain ':')."""
    return f"{source}:{ref_id}"
