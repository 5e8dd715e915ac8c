"""Consent domain types: what a customer agreed to (or withdrew), when, through which channel, with what proof."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class ConsentScope(StrEnum):
    """``standard``: consent to the purpose (PIPL art. 14). ``sensitive``: the separate consent that sensitive fields
    such as the national id need under that purpose (art. 29)."""

    STANDARD = "standard"
    SENSITIVE = "sensitive"


class ConsentAction(StrEnum):
    GRANT = "grant"
    WITHDRAW = "withdraw"


class GivenBy(StrEnum):
    """Who gave the consent: the customer, or a parent or guardian (required under 14, PIPL art. 31)."""

    SUBJECT = "subject"
    GUARDIAN = "guardian"


class Channel(StrEnum):
    POS = "pos"
    WEB = "web"
    MINI_PROGRAM = "mini_program"
    APP = "app"
    CALL_CENTRE = "call_centre"
    PAPER = "paper"
    SYSTEM = "system"  # recorded by the vault itself, e.g. a consent lapsing at the end of its retention period


class ConsentState(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    NOT_GIVEN = "not_given"


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A grant or withdrawal as the caller asked for it (validated by the service)."""

    purpose: str
    scope: ConsentScope
    channel: Channel
    given_by: GivenBy = GivenBy.SUBJECT
    notice_version: str = ""
    notice_sha256: str = ""  # hex
    evidence_ref: str = ""

    def __repr__(self) -> str:
        return f"ConsentRequest(purpose={self.purpose!r}, scope={self.scope.value!r}, evidence_ref=[pii])"


@dataclass(frozen=True, slots=True, repr=False)
class ConsentRecord:
    record_id: str
    customer_id: str
    revision: int
    purpose: str
    scope: ConsentScope
    action: ConsentAction
    given_by: GivenBy
    notice_version: str
    notice_sha256: bytes | None
    channel: Channel
    actor: str
    actor_role: str
    evidence_ref: str
    record_time: dt.datetime

    def __repr__(self) -> str:
        return f"ConsentRecord(record_id={self.record_id!r}, action={self.action.value!r}, evidence_ref=[pii])"


@dataclass(frozen=True, slots=True)
class ConsentStatus:
    """The current state of one (purpose, scope) for a customer."""

    purpose: str
    scope: ConsentScope
    state: ConsentState
    given_by: GivenBy | None
    revision: int
    update_time: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Standing:
    """What a read needs to know of one customer's consents under one purpose: per scope, granted and by whom."""

    granted: dict[ConsentScope, GivenBy]

    def has(self, scope: ConsentScope, *, guardian: bool) -> bool:
        given_by = self.granted.get(scope)
        return given_by is not None and (given_by is GivenBy.GUARDIAN or not guardian)


NO_CONSENT = Standing({})
