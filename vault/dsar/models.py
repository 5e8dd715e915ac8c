"""DSAR domain types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class DsarType(StrEnum):
    ACCESS = "access"
    PORTABILITY = "portability"
    ERASURE = "erasure"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"


class DsarStatus(StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    COMPLETED = "completed"
    REJECTED = "rejected"


class RejectionReason(StrEnum):
    IDENTITY_NOT_VERIFIED = "identity_not_verified"
    LEGAL_RETENTION = "legal_retention"
    LEGAL_HOLD = "legal_hold"
    MANIFESTLY_UNFOUNDED = "manifestly_unfounded"
    DUPLICATE = "duplicate"
    OTHER = "other"


OPEN_STATUSES = (DsarStatus.RECEIVED, DsarStatus.VERIFIED)


@dataclass(frozen=True, slots=True, repr=False)
class DsarRequest:
    request_id: str
    customer_id: str
    type: DsarType
    status: DsarStatus
    opened_by: str
    open_time: dt.datetime
    due_date: dt.date
    close_time: dt.datetime | None = None
    rejection_reason: RejectionReason | None = None
    rejection_text: str = ""
    receipt_id: str = ""

    def overdue(self, today: dt.date) -> bool:
        return self.status in OPEN_STATUSES and today > self.due_date

    def __repr__(self) -> str:
        return f"DsarRequest({self.request_id!r}, {self.type.value}, {self.status.value}, rejection_text=[pii])"
