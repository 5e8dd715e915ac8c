"""Audit event text: control characters (the canonical form's separators among them) never reach the MAC input."""

from __future__ import annotations

import pytest

from audit.events import SEPARATOR, AuditDraft, Caller, clean


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("pos-sync", 64, "pos-sync"),
        ("门店-上海", 64, "门店-上海"),
        (f"a{SEPARATOR}b", 64, "a?b"),
        ("line\nbreak\ttab\x00nul", 64, "line?break?tab?nul"),
        ("x" * 100, 10, "x" * 10),
        ("\x1f" * 100, 3, "???"),
    ],
)
def test_clean_keeps_printable_text_and_replaces_control_characters(value: str, limit: int, expected: str) -> None:
    assert clean(value, limit) == expected


def test_a_draft_holds_no_separator_and_only_well_formed_ids_and_field_names() -> None:
    caller = Caller(f"p{SEPARATOR}x", "service", "act\n", request_id="r" * 100, peer="ipv4:1.2.3.4", purpose="crm")
    draft = AuditDraft.of(caller, "ok", ("not-an-id", "13800138000"), ("name", "Name With Spaces"))
    assert draft.principal == "p?x" and draft.action == "act?" and len(draft.request_id) == 64
    assert draft.customer_ids == () and draft.fields == ("name",)
