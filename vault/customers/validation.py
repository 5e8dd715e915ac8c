"""Validation and canonicalisation of customer input. Every broken rule is collected, so a caller sees all at once."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from functools import partial

from vault.customers import identifiers as ids
from vault.customers.models import ExternalRef, Gender, Profile
from vault.errors import FieldViolation, InvalidArgument

MAX_NAME = 100
MAX_ADDRESS = 500
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE = 1000
MAX_EXTERNAL_REFS = 20
_ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Cc: control characters; Cf: format characters, which include zero-width spaces and bidi overrides (U+202E) that
# make a stored name display as something else. Cs/Co/Cn: surrogates, private use, unassigned.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def _clean_text(value: str, *, limit: int) -> str:
    text = unicodedata.normalize("NFC", value).strip()
    if len(text) > limit:
        raise ids.IdentifierError(f"must be at most {limit} characters")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text):
        raise ids.IdentifierError("must not contain control, format (zero-width, bidi) or unassigned characters")
    return text


def _birth_date(value: str, *, today: dt.date) -> str:
    value = value.strip()
    if not _DATE.fullmatch(value):
        raise ids.IdentifierError("must be a date in the form YYYY-MM-DD")
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise ids.IdentifierError("must be a real calendar date") from None
    if date > today or date.year < 1900:
        raise ids.IdentifierError("must be between 1900-01-01 and today")
    return value


class _Collector:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.violations: list[FieldViolation] = []

    def check(self, path: str, convert: Callable[[str], str], value: str) -> str:
        """``convert(value)``, or "" with a violation recorded. Blank input means "not given" and is not converted."""
        if not value.strip():
            return ""
        try:
            return convert(value)
        except ids.IdentifierError as error:
            self.violations.append(FieldViolation(f"{self.prefix}{path}", error.rule))
            return ""

    def fail(self, path: str, rule: str) -> None:
        self.violations.append(FieldViolation(f"{self.prefix}{path}", rule))


def canonical_profile(
    raw: Profile, *, prefix: str = "customer.", only: frozenset[str] | None = None, today: dt.date | None = None
) -> Profile:
    """Validate ``raw`` (the fields in ``only``, or all) and return its canonical form; raises ``InvalidArgument``."""
    day = today or dt.date.today()
    c = _Collector(prefix)
    converters: dict[str, Callable[[str], str]] = {
        "name": partial(_clean_text, limit=MAX_NAME),
        "mobile": ids.canonical_mobile,
        "email": ids.canonical_email,
        "national_id": partial(ids.canonical_national_id, today=day),
        "birth_date": partial(_birth_date, today=day),
        "address": partial(_clean_text, limit=MAX_ADDRESS),
        "member_id": ids.canonical_member_id,
    }
    texts = {
        name: c.check(name, convert, getattr(raw, name)) if only is None or name in only else ""
        for name, convert in converters.items()
    }
    attributes = _attributes(raw.attributes, c) if only is None or "attributes" in only else {}
    refs = _external_refs(raw.external_refs, c) if only is None or "external_refs" in only else ()
    if c.violations:
        raise InvalidArgument(c.violations)
    return Profile(
        **texts,
        gender=raw.gender if only is None or "gender" in only else Gender.UNSPECIFIED,
        attributes=attributes,
        external_refs=refs,
    )


def _attributes(raw: dict[str, str], c: _Collector) -> dict[str, str]:
    if len(raw) > MAX_ATTRIBUTES:
        c.fail("attributes", f"must have at most {MAX_ATTRIBUTES} entries")
        return {}
    result: dict[str, str] = {}
    for key in sorted(raw):
        if not _ATTRIBUTE_KEY.fullmatch(key):
            # The key is part of the path users see, so a malformed key is not echoed either.
            c.fail("attributes", "keys must be lower_snake_case, 1-63 characters, starting with a letter")
            continue
        value = c.check(f"attributes[{key}]", partial(_clean_text, limit=MAX_ATTRIBUTE_VALUE), raw[key])
        if value:
            result[key] = value
    return result


def _external_refs(raw: tuple[ExternalRef, ...], c: _Collector) -> tuple[ExternalRef, ...]:
    if len(raw) > MAX_EXTERNAL_REFS:
        c.fail("external_refs", f"must have at most {MAX_EXTERNAL_REFS} entries")
        return ()
    refs: list[ExternalRef] = []
    for index, ref in enumerate(raw):
        source = c.check(f"external_refs[{index}].source", ids.canonical_ref_source, ref.source)
        ref_id = c.check(f"external_refs[{index}].id", ids.canonical_ref_id, ref.id)
        if not ref.source.strip() or not ref.id.strip():
            c.fail(f"external_refs[{index}]", "must have both source and id")
        elif source and ref_id:
            canonical = ExternalRef(source, ref_id)
            if canonical in refs:
                c.fail(f"external_refs[{index}]", "must not repeat another entry")
            refs.append(canonical)
    return tuple(refs)


def require_identifier(profile: Profile, prefix: str = "customer") -> None:
    """A customer nobody can find again is a liability: demand at least one identifier."""
    if not profile.identifiers():
        raise InvalidArgument.single(
            prefix, "must have at least one identifier: mobile, email, national_id, member_id or external_refs"
        )
