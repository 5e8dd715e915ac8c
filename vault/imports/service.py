"""Importing channel files: every row canonicalised and validated; a row that matches an existing customer by mobile,
member id, national id, email or external ref is merged into it (empty fields filled, the new external ref recorded)
instead of creating a duplicate; a value that differs from the stored one is reported as a conflict, never
overwritten. Each row gets an outcome and, if rejected, a reason code and the field — never a value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import TypeVar

from audit.events import Caller
from vault.customers.models import PERSONAL_FIELDS, ExternalRef, Gender, IdentifierKind, Profile, fill_gaps
from vault.customers.service import CustomerService
from vault.customers.validation import canonical_profile, require_identifier
from vault.errors import InvalidArgument, NotFound, PiivaultError, VersionConflict
from vault.observability.metrics import count_import_rows
from vault.purchases.models import Line, PurchaseInput
from vault.purchases.service import PurchaseService

T = TypeVar("T")
BATCH = 200  # rows per identifier lookup; new customers per transaction
CUSTOMER_FIELDS = frozenset({*PERSONAL_FIELDS, "external_id"}) - {"attributes", "external_refs"}
PURCHASE_FIELDS = frozenset(
    {
        "customer_id",
        "mobile",
        "member_id",
        "email",
        "national_id",
        "external_id",
        "order_id",
        "purchase_time",
        "amount",
        "currency",
        "store_id",
        "payment_method",
        "coupon",
        "return_of_order_id",
        "sku",
        "quantity",
    }
)
_GENDERS = {
    "男": Gender.MALE,
    "m": Gender.MALE,
    "male": Gender.MALE,
    "女": Gender.FEMALE,
    "f": Gender.FEMALE,
    "female": Gender.FEMALE,
    "其他": Gender.OTHER,
    "other": Gender.OTHER,
}
_CUSTOMER_KEYS = ("customer_id", "member_id", "mobile", "email", "national_id", "external_id")
_RESOLVE_ORDER = (IdentifierKind.MEMBER_ID, IdentifierKind.MOBILE, IdentifierKind.EMAIL, IdentifierKind.NATIONAL_ID)
MERGE_ATTEMPTS = 3  # a merge that keeps losing to other writers is reported as rejected (version_conflict)
PURCHASE_CHUNK = 1000  # purchase rows whose customers are resolved in one query
_DATE = re.compile(r"(\d{4})[-/.年]?(\d{1,2})[-/.月]?(\d{1,2})日?")
CHINA = dt.timezone(dt.timedelta(hours=8))  # a channel time without an offset is Beijing time


@dataclass(frozen=True, slots=True)
class RowResult:
    row: int
    outcome: str  # created, merged, unchanged, rejected
    customer_id: str = ""
    reason: str = ""  # for rejected rows: a code such as invalid, ambiguous, not_found
    field: str = ""  # the field a rejection or the conflicts concern
    filled: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


@dataclass
class ImportSummary:
    counts: dict[str, int] = field(default_factory=dict)
    results: list[RowResult] = field(default_factory=list)

    def add(self, result: RowResult) -> None:
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        self.results.append(result)


def _birth_date(text: str) -> str:
    match = _DATE.fullmatch(text.strip())
    if not match:
        return text  # validation rejects it with its rule
    year, month, day = match.groups()
    return f"{year}-{int(month):02d}-{int(day):02d}"


def profile_of_row(values: dict[str, str], source: str) -> Profile:
    gender_text = values.get("gender", "").strip().lower()
    gender = _GENDERS.get(gender_text, Gender.UNSPECIFIED)
    if gender_text and gender is Gender.UNSPECIFIED:
        raise InvalidArgument.single("gender", "must be 男/女/其他 or male/female/other")
    raw = Profile(
        name=values.get("name", ""),
        mobile=values.get("mobile", ""),
        email=values.get("email", ""),
        national_id=values.get("national_id", ""),
        birth_date=_birth_date(values.get("birth_date", "")),
        gender=gender,
        address=values.get("address", ""),
        member_id=values.get("member_id", ""),
    )
    return canonical_row(raw, values.get("external_id", ""), source)


def canonical_row(raw: Profile, external_id: str, source: str) -> Profile:
    """A row's profile in canonical form, with its external id filed under the source; ``InvalidArgument`` if not."""
    refs = (ExternalRef(source, external_id),) if external_id else ()
    profile = canonical_profile(replace(raw, attributes={}, external_refs=refs), prefix="")
    require_identifier(profile)
    return profile


@dataclass(frozen=True, slots=True)
class _Follower:
    """A row merged in memory into a customer still waiting to be created."""

    number: int
    profile: Profile  # as the row gave it, for settling it alone if the batch cannot be created
    filled: tuple[str, ...]
    conflicts: tuple[str, ...]

    def result(self, customer_id: str) -> RowResult:
        outcome = "merged" if self.filled else "unchanged"
        return RowResult(self.number, outcome, customer_id, filled=self.filled, conflicts=self.conflicts)


@dataclass
class _Pending:
    """A new customer waiting in the batch: its first row, and the rows of the same person merged into it."""

    number: int
    first: Profile
    profile: Profile = field(init=False)
    followers: list[_Follower] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.profile = self.first

    def absorb(self, number: int, incoming: Profile) -> None:
        self.profile, filled, conflicts = fill_gaps(self.profile, incoming)
        self.followers.append(_Follower(number, incoming, filled, conflicts))

    def follower_rows(self) -> list[tuple[int, Profile]]:
        return [(follower.number, follower.profile) for follower in self.followers]


class ImportService:
    def __init__(
        self,
        customers: CustomerService,
        purchases: PurchaseService,
        progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._customers = customers
        self._purchases = purchases
        self._progress = progress

    def customers(self, caller: Caller, source: str, rows: Iterable[tuple[int, dict[str, str]]]) -> ImportSummary:
        """Rows of a file: text values by field name."""
        return self.profiles(caller, ((n, partial(profile_of_row, values, source)) for n, values in rows))

    def profiles(
        self, caller: Caller, rows: Iterable[tuple[int, Callable[[], Profile]]], *, metered: bool = False
    ) -> ImportSummary:
        """Rows as (row number, a function that returns the canonical profile or raises ``InvalidArgument``).

        ``metered``: each row spends one lookup of the caller's budget. Matching a row against stored customers
        answers "does this phone belong to a customer, and is this their name?", so over the API an import is
        limited like FindCustomers; the operator's local command is not."""
        summary = ImportSummary()
        # New customers are created in batches (one transaction for up to BATCH of them). A row whose identifiers
        # belong to a customer still waiting in the batch is the same person written again (a channel file repeats
        # people, often in neighbouring rows): it is merged into the waiting profile in memory — fields filled,
        # conflicts reported, never overwritten — exactly as it would be merged into the stored customer, and the
        # batch records one audit event for the match, so nothing is flushed early or read back.
        pending: list[_Pending] = []
        waiting: dict[tuple[IdentifierKind, str], _Pending] = {}  # identifier → the waiting customer holding it
        # Blind-index digests of the chunk's identifiers, computed by the lookup and reused by the creation.
        digests: dict[tuple[IdentifierKind, str], bytes] = {}

        def flush() -> None:
            # A row merged into a waiting customer may carry an identifier that is not copied into it (it conflicts
            # with the waiting one's) and that a stored customer took after the chunk was looked up — a row merged
            # earlier in the chunk, another writer. That row names two customers: settled alone, it is refused as
            # ambiguous, as it would have been had it come after the waiting customer was stored.
            followers = [follower.profile for entry in pending for follower in entry.followers]
            created = None
            if not followers or not any(self._customers.owners_of_many(followers, digests)):
                created = self._customers.create_many(
                    caller,
                    [entry.profile for entry in pending],
                    matches=[[follower.filled for follower in entry.followers] for entry in pending],
                    known=digests,
                )
            if created is None:  # an identifier was taken meanwhile: settle every row one by one
                for entry in pending:
                    for number, profile in ((entry.number, entry.first), *entry.follower_rows()):
                        summary.add(self._customer_row(caller, number, profile, self._customers.owners_of(profile)))
            else:
                for entry, customer in zip(pending, created, strict=True):
                    summary.add(RowResult(entry.number, "created", customer.customer_id))
                    for follower in entry.followers:
                        summary.add(follower.result(customer.customer_id))
            self._progress(sum(1 + len(entry.followers) for entry in pending))
            pending.clear()
            waiting.clear()

        for chunk in chunks(rows, BATCH):
            digests.clear()  # the previous chunk's (kept no longer than a chunk)
            parsed: list[tuple[int, Profile]] = []
            for number, make in chunk:
                if metered:
                    self._customers.charge_lookup(caller.principal)
                try:
                    parsed.append((number, make()))
                except InvalidArgument as error:
                    summary.add(RowResult(number, "rejected", reason="invalid", field=error.violations[0].field))
                    self._progress(1)
            owners = self._customers.owners_of_many([profile for _, profile in parsed], digests)  # one query a chunk
            for (number, profile), taken in zip(parsed, owners, strict=True):
                identifiers = profile.identifiers()
                same = {id(entry): entry for key in identifiers if (entry := waiting.get(key)) is not None}
                if len(same) + len(taken) > 1:
                    # Identifiers of two different customers in one row: a person the import cannot settle alone.
                    summary.add(RowResult(number, "rejected", reason="ambiguous", field="identifiers"))
                    self._progress(1)
                elif same:
                    entry = next(iter(same.values()))
                    entry.absorb(number, profile)
                    waiting.update(dict.fromkeys(entry.profile.identifiers(), entry))
                elif not taken:
                    entry = _Pending(number, profile)
                    pending.append(entry)
                    waiting.update(dict.fromkeys(identifiers, entry))
                else:
                    summary.add(self._customer_row(caller, number, profile, taken))
                    self._progress(1)
            if pending:
                flush()
        summary.results.sort(key=lambda result: result.row)
        count_import_rows("customers", (result.outcome for result in summary.results))
        return summary

    def _customer_row(self, caller: Caller, number: int, profile: Profile, owners: set[str]) -> RowResult:
        """One canonical row whose identifiers belong to ``owners``: created, merged, unchanged or rejected."""
        if len(owners) > 1:
            # Identifiers of two different customers in one row: a person the import cannot settle alone.
            return RowResult(number, "rejected", reason="ambiguous", field="identifiers")
        try:
            if not owners:
                created = self._customers.create(caller, "", profile)
                return RowResult(number, "created", created.customer_id)
            return self._merge(caller, number, owners.pop(), profile)
        except PiivaultError as error:
            violation = error.violations[0].field if isinstance(error, InvalidArgument) else ""
            return RowResult(number, "rejected", reason=error.outcome, field=violation)

    def _merge(self, caller: Caller, number: int, customer_id: str, incoming: Profile) -> RowResult:
        attempts = MERGE_ATTEMPTS
        while True:
            row, current, _ = self._customers.load(customer_id)
            if row.restricted:
                return RowResult(number, "rejected", reason="restricted", field="customer")
            merged, filled, conflicts = fill_gaps(current.profile, incoming)
            if not filled:
                self._customers.note_match(caller, customer_id)  # the caller learnt which customer holds the row's ids
                return RowResult(number, "unchanged", customer_id, conflicts=conflicts)
            try:
                self._customers.update(caller, merged, customer_id, filled, current.version)
            except VersionConflict:
                # Changed since it was read (another writer, another worker of a parallel import): merge into the
                # customer as it is now, so nothing the other writer stored is overwritten.
                attempts -= 1
                if not attempts:
                    raise
                continue
            return RowResult(number, "merged", customer_id, filled=filled, conflicts=conflicts)

    def purchases(
        self,
        caller: Caller,
        source: str,
        rows: Iterable[tuple[int, dict[str, str]]],
        resolved: dict[tuple[str, ...], str | PiivaultError] | None = None,
    ) -> ImportSummary:
        """``resolved``: the customers found for earlier rows of the same file and source, when its rows come in
        several calls (a worker of a parallel import); filled in as rows name new ones."""
        summary = ImportSummary()
        numbers: list[int] = []
        # A channel file names the same customers again and again: each distinct set of customer columns is resolved
        # once, and the new ones of every chunk of rows in one query.
        resolved = {} if resolved is None else resolved

        def reject(number: int, error: PiivaultError) -> None:
            reason = "not_found" if isinstance(error, NotFound) else error.outcome
            where = error.violations[0].field if isinstance(error, InvalidArgument) else "customer"
            summary.add(RowResult(number, "rejected", reason=reason, field=where))
            self._progress(1)

        def accepted() -> Iterator[tuple[str, PurchaseInput]]:
            for chunk in chunks(rows, PURCHASE_CHUNK):
                keyed = [(number, values, _customer_key(values)) for number, values in chunk]
                # A customer not found is looked up again in the next chunk: it may have been created meanwhile.
                for key in [key for key, found in resolved.items() if isinstance(found, NotFound)]:
                    del resolved[key]
                resolved.update(self._purchase_customers({key for _, _, key in keyed} - resolved.keys(), source))
                for number, values, key in keyed:
                    customer = resolved[key]
                    if isinstance(customer, PiivaultError):
                        reject(number, customer)
                        continue
                    try:
                        purchase = purchase_of_row(values, source)
                    except PiivaultError as error:
                        reject(number, error)
                        continue
                    numbers.append(number)
                    yield customer, purchase

        batch = self._purchases.record_many(caller, accepted())
        rejected = {index: (f, r) for index, f, r in batch.rejections or []}
        for index, number in enumerate(numbers):
            if index in rejected:
                summary.add(RowResult(number, "rejected", reason="invalid", field=rejected[index][0]))
            else:
                summary.add(RowResult(number, "recorded"))
            self._progress(1)
        summary.counts["duplicates"] = batch.duplicates
        count_import_rows("purchases", (result.outcome for result in summary.results))
        return summary

    def _purchase_customers(
        self, keys: Iterable[tuple[str, ...]], source: str
    ) -> dict[tuple[str, ...], str | PiivaultError]:
        """The customer each set of customer columns names (the first of customer_id, member_id, mobile, email,
        national_id, external_id given), or the error that rejects its rows."""
        answers: dict[tuple[str, ...], str | PiivaultError] = {}
        lookups: list[tuple[tuple[str, ...], tuple[IdentifierKind, str, str]]] = []
        for key in keys:
            values = dict(zip(_CUSTOMER_KEYS, key, strict=True))
            if values["customer_id"]:
                answers[key] = values["customer_id"]
            elif named := next((kind for kind in _RESOLVE_ORDER if values[kind.value]), None):
                lookups.append((key, (named, values[named.value], "")))
            elif values["external_id"]:
                lookups.append((key, (IdentifierKind.EXTERNAL_REF, values["external_id"], source)))
            else:
                answers[key] = InvalidArgument.single(
                    "customer", "a column must identify the customer (customer_id, member_id, mobile…)"
                )
        found = self._customers.resolve_many([wanted for _, wanted in lookups])
        answers.update(zip((key for key, _ in lookups), found, strict=True))
        return answers


def _customer_key(values: dict[str, str]) -> tuple[str, ...]:
    return tuple(values.get(name, "") for name in _CUSTOMER_KEYS)


def chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def purchase_of_row(values: dict[str, str], source: str) -> PurchaseInput:
    try:
        amount = Decimal(values.get("amount", "").replace(",", "") or "x")
    except InvalidOperation:
        raise InvalidArgument.single("amount", "must be a decimal amount such as 128.50") from None
    text = values.get("purchase_time", "").strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("/", "-")) if text else None
    except ValueError:
        raise InvalidArgument.single("purchase_time", "must be a date and time such as 2026-03-01 10:30:00") from None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=CHINA)
    minor = int((amount * 100).to_integral_value())
    lines: tuple[Line, ...] = ()
    if values.get("sku"):
        quantity_text = values.get("quantity") or "1"
        if not quantity_text.isdigit() or int(quantity_text) == 0:
            raise InvalidArgument.single("quantity", "must be a positive whole number")
        quantity = int(quantity_text)
        if minor % quantity == 0:  # one line per row; a total that does not split evenly is kept without lines
            lines = (Line(values["sku"], quantity, minor // quantity),)
    return PurchaseInput(
        source=source,
        order_id=values.get("order_id", ""),
        purchase_time=when,
        amount_minor=minor,
        currency=(values.get("currency") or "CNY").upper(),
        store_id=values.get("store_id", ""),
        lines=lines,
        payment_method=values.get("payment_method", ""),
        coupon=values.get("coupon", ""),
        return_of_order_id=values.get("return_of_order_id", ""),
    )
