"""Purchase domain types and their validation."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

from vault.errors import FieldViolation, InvalidArgument

ANALYTICS = "analytics"  # the analytics domain purchases are filed under
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_LINES = 500
# ``json.dumps(…, separators=(",", ":"))`` without building an encoder per call; the stored format must not change.
LINES_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True, slots=True)
class PurchaseInput:
    source: str
    order_id: str
    purchase_time: dt.datetime | None
    amount_minor: int
    currency: str
    store_id: str = ""
    lines: tuple[Line, ...] = ()
    payment_method: str = ""
    coupon: str = ""
    return_of_order_id: str = ""

    @property
    def items(self) -> int:
        return sum(line.quantity for line in self.lines)

    def lines_json(self) -> str:
        return LINES_JSON.encode([[line.sku, line.quantity, line.unit_price_minor] for line in self.lines])


def _text(value: str, field: str, limit: int, *, required: bool) -> list[FieldViolation]:
    if (required and not value) or len(value) > limit or not value.isprintable():
        need = "1" if required else "0"
        return [FieldViolation(field, f"must be {need}-{limit} printable characters")]
    return []


def validate(purchase: PurchaseInput, now: dt.datetime, prefix: str = "purchase") -> PurchaseInput:
    """The purchase with its source canonicalised, or ``InvalidArgument`` naming every broken rule (never a value)."""
    source = purchase.source.strip().lower()
    problems: list[FieldViolation] = []
    if not _SOURCE.fullmatch(source):
        problems.append(FieldViolation(f"{prefix}.source", "must be 1-32 lower-case letters, digits, '_' or '-'"))
    problems += _text(purchase.order_id, f"{prefix}.order_id", 128, required=True)
    problems += _text(purchase.store_id, f"{prefix}.store_id", 64, required=False)
    problems += _text(purchase.payment_method, f"{prefix}.payment_method", 32, required=False)
    problems += _text(purchase.coupon, f"{prefix}.coupon", 64, required=False)
    problems += _text(purchase.return_of_order_id, f"{prefix}.return_of_order_id", 128, required=False)
    if purchase.purchase_time is None:
        problems.append(FieldViolation(f"{prefix}.purchase_time", "is required"))
    elif purchase.purchase_time > now + dt.timedelta(days=1):
        problems.append(FieldViolation(f"{prefix}.purchase_time", "must not be in the future"))
    if not _CURRENCY.fullmatch(purchase.currency):
        problems.append(FieldViolation(f"{prefix}.currency", "must be an ISO 4217 code such as CNY"))
    if purchase.amount_minor < 0:
        problems.append(
            FieldViolation(f"{prefix}.amount_minor", "must not be negative (a return sets return_of_order_id)")
        )
    if len(purchase.lines) > _MAX_LINES:
        problems.append(FieldViolation(f"{prefix}.lines", f"at most {_MAX_LINES} lines"))
    for index, line in enumerate(purchase.lines):
        where = f"{prefix}.lines[{index}]"
        problems += _text(line.sku, f"{where}.sku", 64, required=True)
        if line.quantity <= 0:
            problems.append(FieldViolation(f"{where}.quantity", "must be positive"))
        if line.unit_price_minor < 0:
            problems.append(FieldViolation(f"{where}.unit_price_minor", "must not be negative"))
    if purchase.lines and not problems:
        total = sum(line.quantity * line.unit_price_minor for line in purchase.lines)
        if total != purchase.amount_minor:
            problems.append(FieldViolation(f"{prefix}.amount_minor", "must equal the sum of quantity x unit price"))
    if problems:
        raise InvalidArgument(problems)
    if source == purchase.source:
        return purchase
    return PurchaseInput(
        source=source,
        order_id=purchase.order_id,
        purchase_time=purchase.purchase_time,
        amount_minor=purchase.amount_minor,
        currency=purchase.currency,
        store_id=purchase.store_id,
        lines=purchase.lines,
        payment_method=purchase.payment_method,
        coupon=purchase.coupon,
        return_of_order_id=purchase.return_of_order_id,
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    purchase_id: str
    duplicate: bool


@dataclass
class BatchSummary:
    recorded: int = 0
    duplicates: int = 0
    rejections: list[tuple[int, str, str]] | None = None  # (index, field, rule)

    @property
    def rejected(self) -> int:
        return len(self.rejections or [])
