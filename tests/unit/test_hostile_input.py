"""Hostile input, as properties (Hypothesis): rewrites of a phone reach one canonical value or are refused, never a
third value; every single-character change of a valid national id is refused; control, zero-width and bidi
characters never pass into a stored free-text field; a log line stays one JSON object whatever a value holds."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from vault import logs
from vault.customers import identifiers as ids
from vault.customers.models import Profile
from vault.customers.validation import canonical_profile
from vault.errors import InvalidArgument

MOBILE_PREFIXES = ("130", "133", "135", "138", "139", "150", "152", "158", "166", "177", "186", "188", "199")
mobiles = st.builds(
    lambda p, rest: p + rest, st.sampled_from(MOBILE_PREFIXES), st.text("0123456789", min_size=8, max_size=8)
)
NOISE = [" ", "-", ".", "\u200b", "\u200e", "\u202e", "\ufeff", "\t", "\n", "/", "_", "O"]


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    mobile=mobiles,
    prefix=st.sampled_from(["", "+86", "+86 ", "0086", "0086 ", "86", "+ 86"]),
    cuts=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(NOISE)), max_size=3),
    wide=st.booleans(),
)
def test_every_rewrite_of_a_phone_is_the_same_number_or_refused(
    mobile: str, prefix: str, cuts: list[tuple[int, str]], wide: bool
) -> None:
    try:
        expected = ids.canonical_mobile(mobile)
    except ids.IdentifierError:
        return  # a generated number outside the allocated ranges: nothing to compare with
    text = mobile
    for position, noise in sorted(cuts, reverse=True):
        text = text[:position] + noise + text[position:]
    written = prefix + (fullwidth(text) if wide else text)
    try:
        canonical = ids.canonical_mobile(written)
    except ids.IdentifierError:
        return  # refused: fine
    assert canonical == expected


def national_ids() -> st.SearchStrategy[str]:
    def build(day: dt.date, region: str, sequence: int) -> str:
        body = region + day.strftime("%Y%m%d") + f"{sequence:03d}"
        return body + ric.calc_check_digit(body + "0")  # stdnum reads the digits before the last

    return st.builds(
        build,
        st.dates(dt.date(1930, 1, 1), dt.date(2020, 12, 31)),
        st.sampled_from(["110105", "310104", "440305", "510107", "330106"]),
        st.integers(0, 999),
    )


@settings(max_examples=200, deadline=None)
@given(national_id=national_ids(), position=st.integers(0, 17), replacement=st.sampled_from("0123456789X"))
def test_every_single_character_change_of_a_national_id_is_refused(
    national_id: str, position: int, replacement: str
) -> None:
    assert ids.canonical_national_id(national_id) == national_id
    mutated = national_id[:position] + replacement + national_id[position + 1 :]
    if mutated == national_id:
        return
    with pytest.raises(ids.IdentifierError):
        ids.canonical_national_id(mutated)


HOSTILE = st.sampled_from(["\u202e", "\u200b", "\u0000", "\u001b[31m", "\r\n", "\u2066", "\ufeff", "\u0085"])


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=20), hostile=HOSTILE, where=st.integers(0, 20))
def test_control_and_bidi_characters_never_reach_a_free_text_field(text: str, hostile: str, where: int) -> None:
    name = text[:where] + hostile + text[where:]
    try:
        profile = canonical_profile(Profile(name=name, mobile="13800138000"))
    except InvalidArgument as error:  # refused is one of the two allowed outcomes
        assert [v.field for v in error.violations] == ["customer.name"]  # noqa: PT017
        assert all(name not in v.rule for v in error.violations if name.strip())  # noqa: PT017
        return
    assert not any(ch in profile.name for ch in "\u202e\u200b\u0000\u001b\u2066\ufeff\u0085\r\n")


@settings(max_examples=100, deadline=None)
@given(value=st.text(max_size=40))
def test_a_log_record_stays_one_json_line_whatever_a_value_holds(value: str) -> None:
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    try:
        structlog.get_logger("piivault.test").info("rpc" + value, rpc=value, request_id=value, principal=value)
    finally:
        logs.configure("info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["rpc"] == value and record["event"] == "rpc" + value
