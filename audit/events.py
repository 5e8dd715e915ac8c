"""Audit events and their canonical form.

An event names who (principal, role), what (action = RPC), whom (customer ids) and which fields (names only), why
(purpose), how it ended (outcome) and where from (request id, peer) — never a value of a field, a token or a key.
The canonical form is the MAC input: the fields in a fixed order joined by the ASCII unit separator (0x1F), which no
field may contain (``clean`` removes control characters from the free-text ones at creation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEPARATOR = "\x1f"
LIST_SEPARATOR = ","
CUSTOMER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def is_customer_id(value: str) -> bool:
    return CUSTOMER_ID.fullmatch(value) is not None


def clean(value: str, limit: int) -> str:
    """Printable, bounded text: control characters (including the separators) become '?'."""
    text = value[:limit]
    if text.isprintable():  # the usual case, checked in one pass in C: this runs for six fields of every event
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and through which operation: the audit context every service method receives."""

    principal: str
    role: str
    action: str
    request_id: str = ""
    peer: str = ""
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An event before the log gives it a sequence number, a time and a MAC."""

    principal: str
    role: str
    action: str
    customer_ids: tuple[str, ...]
    fields: tuple[str, ...]
    purpose: str
    outcome: str
    request_id: str
    peer: str

    @classmethod
    def of(
        cls, caller: Caller, outcome: str, customer_ids: tuple[str, ...] = (), fields: tuple[str, ...] = ()
    ) -> AuditDraft:
        return cls(
            principal=clean(caller.principal, 64),
            role=clean(caller.role, 32),
            action=clean(caller.action, 96),
            # Only well-formed ids and field names: anything else could be personal data passed by mistake.
            customer_ids=tuple(c for c in customer_ids if is_customer_id(c)),
            fields=tuple(f for f in fields if FIELD_NAME.fullmatch(f)),
            purpose=clean(caller.purpose, 64),
            outcome=outcome,
            request_id=clean(caller.request_id, 64),
            peer=clean(caller.peer, 96),
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    time_us: int
    principal: str
    role: str
    action: str
    customer_ids: tuple[str, ...]
    fields: tuple[str, ...]
    purpose: str
    outcome: str
    request_id: str
    peer: str
    mac: bytes


# The canonical form, as one %-format over the stored column values in this order (lists already comma-joined):
# seq, time_us, principal, role, action, customer_ids, fields, purpose, outcome, request_id, peer.
CANONICAL_FORMAT = "v1" + "\x1f%d\x1f%d" + "\x1f%s" * 9


def canonical(
    seq: int,
    time_us: int,
    principal: str,
    role: str,
    action: str,
    customer_ids: str,
    fields: str,
    purpose: str,
    outcome: str,
    request_id: str,
    peer: str,
) -> bytes:
    """The MAC input of one event, from its stored column values (lists already joined by commas)."""
    values = (seq, time_us, principal, role, action, customer_ids, fields, purpose, outcome, request_id, peer)
    return (CANONICAL_FORMAT % values).encode()
