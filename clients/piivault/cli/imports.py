"""``piivault import``: customers and purchases from a channel's CSV or XLSX file, merged instead of duplicated.

In-process (the default) the rows go straight to the vault's services as the local operator; a file of
``vault.imports.parallel.MIN_ROWS`` rows or more is imported by worker processes, one per CPU unless ``--jobs`` says
otherwise, with the same report as one process (see that module). With ``--address`` (or
PIIVAULT_ADDRESS) they go through the API with PIIVAULT_TOKEN (role ``service``): customers through
CustomerService.ImportCustomers, purchases through PurchaseService.RecordPurchases. The file is read and every row
validated here either way, so the per-row report and the counts are the same; the API differs in two ways:

- ImportCustomers spends one lookup of the token's budget per row (matching a row answers "whose phone is this?"),
  and a purchase row that names its customer by an identifier instead of a customer id costs a FindCustomers lookup
  (once per distinct customer), audited as a read under ``--purpose``. When the budget runs out the command waits for
  it to refill instead of failing; the local operator's import is not metered.
- Rows are sent in calls of at most ``vault.imports.service.BATCH`` (200) customers: the vault charges the lookups of
  such a call before it writes any of its rows, so a call refused for the budget wrote nothing and is sent again
  whole (``remote.Pacer``), and the report stays exact.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from piivault.cli.common import err, fail, opened_vault, operator, record_command
from piivault.cli.remote import Address, Pacer, api_client

if TYPE_CHECKING:
    from piivault.client import PiiVault
    from piivault.v1 import customers_pb2, purchases_pb2
    from vault.customers.models import Profile
    from vault.imports.service import ImportSummary, RowResult
    from vault.purchases.models import PurchaseInput

app = typer.Typer(
    help="Import customers or purchases from CSV (UTF-8, BOM, GBK/GB18030) or XLSX: in-process as the local operator, "
    "or with --address through the API (a service token; every customer row is a metered lookup there).",
    no_args_is_help=True,
)
MapOption = Annotated[list[str] | None, typer.Option("--map", help="HEADER=FIELD, e.g. 手机号码=mobile (repeatable)")]
Jobs = Annotated[
    int,
    typer.Option(
        help="In-process: worker processes for a file of 2,000 rows or more (0: one per CPU; 1: no workers). Rows "
        "that share an identifier or an order stay in one worker, in file order, so the report is that of one process."
    ),
]
CUSTOMER_KEYS = ("customer_id", "member_id", "mobile", "email", "national_id", "external_id")


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        header, sep, field = pair.partition("=")
        if not sep or not header or not field:
            fail("--map takes HEADER=FIELD")
        mapping[header] = field
    return mapping


def _report(summary: ImportSummary, report: Path | None) -> None:
    if report is not None:
        with report.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("row", "outcome", "customer_id", "reason", "field", "filled", "conflicts"))
            for r in summary.results:
                writer.writerow(
                    (r.row, r.outcome, r.customer_id, r.reason, r.field, " ".join(r.filled), " ".join(r.conflicts))
                )
    conflicts = sum(1 for r in summary.results if r.conflicts)
    counts = dict(sorted(summary.counts.items()))
    err.print(", ".join(f"{count:,} {outcome}" for outcome, count in counts.items()))
    if conflicts:
        err.print(f"{conflicts:,} rows disagreed with stored values (kept as stored; see the report)")
    typer.echo(json.dumps({**counts, "conflicts": conflicts}))


def _run(
    kind: str,
    file: Path,
    source: str,
    overrides: dict[str, str],
    report: Path | None,
    address: str,
    purpose: str,
    jobs: int,
) -> None:
    from vault.imports.reader import ReadError, read_table
    from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS

    fields = CUSTOMER_FIELDS if kind == "customers" else PURCHASE_FIELDS
    try:
        table = read_table(file, overrides, fields)
    except ReadError as error:
        fail(str(error))
    err.print("columns: " + ", ".join(f"{header} → {field}" for header, field in table.columns.items()))

    def bar() -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err)

    if address:
        with api_client(address) as client, bar() as progress:
            task = progress.add_task(f"importing {kind}", total=None)
            pacer = Pacer(lambda: progress.update(task, description="waiting for the lookup budget"))
            advance = _advancer(progress, task, f"importing {kind}")
            if kind == "customers":
                summary = _customers_over_api(client, source, table.rows, pacer, advance)
            else:
                summary = _purchases_over_api(client, source, table.rows, pacer, advance, purpose)
        _report(summary, report)
        return

    from audit.events import Caller
    from vault.config import Settings
    from vault.imports.parallel import MIN_ROWS, ImportWorkerFailed, ParallelImport, usable_jobs
    from vault.imports.service import ImportService

    caller = Caller(operator(), "service", f"cli:import {kind}", purpose="")
    head = list(islice(table.rows, MIN_ROWS))
    rows = chain(head, table.rows)
    workers = usable_jobs(jobs) if len(head) == MIN_ROWS else 1
    if workers == 1:
        with opened_vault(f"import {kind}", "service") as vault, bar() as progress:
            task = progress.add_task(f"importing {kind}", total=None)
            service = ImportService(vault.customers, vault.purchases, lambda n: progress.advance(task, n))
            method = service.customers if kind == "customers" else service.purchases
            summary = method(caller, source, rows)
    else:
        record_command(f"import {kind}", "service")  # the vault is closed again before the workers fork
        importer = ParallelImport(Settings.from_env(), kind, caller, source, workers)
        err.print(f"{workers} worker processes")
        try:
            with importer, bar() as progress:  # the progress bar's thread starts after the fork
                task = progress.add_task(f"importing {kind} ({workers} processes)", total=None)
                importer.progress = lambda n: progress.advance(task, n)
                summary = importer.run(rows)
        except ImportWorkerFailed as error:
            fail(f"{error}; the rows imported before it stay, and importing the file again is safe")
    _report(summary, report)


def _advancer(progress: Progress, task: TaskID, description: str) -> Callable[[int], None]:
    def advance(rows: int) -> None:
        progress.update(task, advance=rows, description=description)

    return advance


def _customers_over_api(
    client: PiiVault,
    source: str,
    rows: Iterable[tuple[int, dict[str, str]]],
    pacer: Pacer,
    advance: Callable[[int], None],
) -> ImportSummary:
    """Rows validated here as the in-process import does (an invalid row is reported, never sent), the rest sent to
    ImportCustomers in calls of at most ``BATCH``; the report lists every row in file order."""
    from piivault.v1 import customers_pb2 as pb
    from vault.errors import InvalidArgument
    from vault.imports.service import BATCH, ImportSummary, RowResult, profile_of_row

    results: list[RowResult] = []
    waiting: list[pb.ImportCustomersRequest] = []

    def flush() -> None:
        for part, answer in pacer.send(waiting, lambda part: client.imports.customers(part, source=source)):
            results.extend(_row_result(r) for r in answer.results)
            advance(len(part))
        waiting.clear()

    for number, values in rows:
        try:
            profile = profile_of_row(values, source)
        except InvalidArgument as error:
            results.append(RowResult(number, "rejected", reason="invalid", field=error.violations[0].field))
            advance(1)
            continue
        external_id = profile.external_refs[0].id if profile.external_refs else ""
        waiting.append(pb.ImportCustomersRequest(row=number, customer=_customer_pb(profile), external_id=external_id))
        if len(waiting) == BATCH:
            flush()
    flush()
    summary = ImportSummary()
    for result in sorted(results, key=lambda result: result.row):
        summary.add(result)
    return summary


def _customer_pb(profile: Profile) -> customers_pb2.Customer:
    """A canonical row as the API's message; the vault files the row's external id under the call's source."""
    from piivault.v1 import customers_pb2 as pb

    return pb.Customer(
        name=profile.name,
        mobile=profile.mobile,
        email=profile.email,
        national_id=profile.national_id,
        birth_date=profile.birth_date,
        gender=pb.Gender.Value(f"GENDER_{profile.gender.name}"),
        address=profile.address,
        member_id=profile.member_id,
    )


def _row_result(result: customers_pb2.ImportRowResult) -> RowResult:
    from vault.imports.service import RowResult

    return RowResult(
        int(result.row),
        result.outcome,
        result.customer_id,
        result.reason,
        result.field,
        tuple(result.filled),
        tuple(result.conflicts),
    )


@dataclass(frozen=True)
class Rejection:
    """Why a purchase row's customer cannot be named: the reason code and field of the in-process import."""

    reason: str
    field: str


def _purchases_over_api(
    client: PiiVault,
    source: str,
    rows: Iterable[tuple[int, dict[str, str]]],
    pacer: Pacer,
    advance: Callable[[int], None],
    purpose: str,
) -> ImportSummary:
    """As ``ImportService.purchases``: each row's customer resolved (by FindCustomers, once per distinct customer),
    the row parsed, the accepted rows recorded by RecordPurchases in calls of the vault's own batch size, so the
    vault groups them as the in-process import does. Rows rejected before recording are reported first, as there."""
    from piivault.v1 import purchases_pb2 as pb
    from vault.errors import InvalidArgument
    from vault.imports.service import ImportSummary, RowResult, purchase_of_row
    from vault.purchases.service import BATCH

    summary = ImportSummary()
    recorded: list[RowResult] = []
    resolved: dict[tuple[str, ...], str | Rejection] = {}  # a channel file names the same customers again and again
    accepted: list[tuple[int, pb.RecordPurchasesRequest]] = []
    duplicates = 0

    def flush() -> None:
        nonlocal duplicates
        requests = [request for _, request in accepted]
        answer = client.purchases.record_many(requests)  # a list: sent again on UNAVAILABLE (idempotent per order)
        rejected = {r.index: r.field for r in answer.rejections}
        for index, (number, _) in enumerate(accepted):
            if index in rejected:
                recorded.append(RowResult(number, "rejected", reason="invalid", field=rejected[index]))
            else:
                recorded.append(RowResult(number, "recorded"))
        duplicates += answer.duplicates
        advance(len(accepted))
        accepted.clear()

    for number, values in rows:
        key = tuple(values.get(name, "") for name in CUSTOMER_KEYS)
        if key not in resolved:
            resolved[key] = _resolve(client, pacer, values, source, purpose)
        customer = resolved[key]
        if isinstance(customer, Rejection):
            summary.add(RowResult(number, "rejected", reason=customer.reason, field=customer.field))
            advance(1)
            continue
        try:
            purchase = purchase_of_row(values, source)
        except InvalidArgument as error:
            summary.add(RowResult(number, "rejected", reason="invalid", field=error.violations[0].field))
            advance(1)
            continue
        accepted.append((number, pb.RecordPurchasesRequest(customer_id=customer, purchase=_purchase_pb(purchase))))
        if len(accepted) == BATCH:
            flush()
    if accepted:
        flush()
    for result in recorded:
        summary.add(result)
    summary.counts["duplicates"] = duplicates
    return summary


def _resolve(client: PiiVault, pacer: Pacer, values: dict[str, str], source: str, purpose: str) -> str | Rejection:
    """The customer a purchase row names, or why the row is rejected — the verdicts of the in-process import."""
    from piivault.client import FailedPrecondition, InvalidArgument

    if values.get("customer_id"):
        return values["customer_id"]
    for kind in ("member_id", "mobile", "email", "national_id", "external_id"):
        if values.get(kind):
            break
    else:
        return Rejection("invalid", "customer")
    identifier = values[kind]

    def find(_: list[str]) -> list[str]:
        found = client.customers.find(
            purpose=purpose,
            member_id=identifier if kind == "member_id" else None,
            mobile=identifier if kind == "mobile" else None,
            email=identifier if kind == "email" else None,
            national_id=identifier if kind == "national_id" else None,
            external_ref=(source, identifier) if kind == "external_id" else None,
        )
        return [c.customer_id for c in found.customers]

    try:
        [(_, owners)] = pacer.send([kind], find)
    except InvalidArgument as error:
        return Rejection("invalid", error.fields[0] if error.fields else kind)
    except FailedPrecondition as error:
        if error.reason != "PROCESSING_RESTRICTED":
            raise
        # In-process the row reaches the purchase service, which refuses a restricted customer's purchase this way.
        return Rejection("invalid", "customer_id")
    return owners[0] if owners else Rejection("not_found", "customer")


def _purchase_pb(purchase: PurchaseInput) -> purchases_pb2.Purchase:
    from google.protobuf.timestamp_pb2 import Timestamp

    from piivault.v1 import purchases_pb2 as pb

    message = pb.Purchase(
        source=purchase.source,
        order_id=purchase.order_id,
        store_id=purchase.store_id,
        lines=[
            pb.PurchaseLine(sku=x.sku, quantity=x.quantity, unit_price_minor=x.unit_price_minor) for x in purchase.lines
        ],
        amount_minor=purchase.amount_minor,
        currency=purchase.currency,
        payment_method=purchase.payment_method,
        coupon=purchase.coupon,
        return_of_order_id=purchase.return_of_order_id,
    )
    if purchase.purchase_time is not None:
        stamp = Timestamp()
        stamp.FromDatetime(purchase.purchase_time)
        message.purchase_time.CopyFrom(stamp)
    return message


@app.command("customers")
def import_customers(
    file: Annotated[Path, typer.Argument(help="CSV or XLSX; the first row holds the headers")],
    source: Annotated[str, typer.Option(help="the channel, e.g. pos or miniprogram; external ids are filed under it")],
    map_: MapOption = None,
    report: Annotated[Path | None, typer.Option(help="write the per-row report (no personal data) as CSV")] = None,
    address: Address = "",
    jobs: Jobs = 0,
) -> None:
    """Create new customers; merge rows that match a stored one (fill empty fields, add the external ref).

    With --address: through ImportCustomers, one lookup of the token's budget per row (the command waits while it
    refills); the report is the same."""
    _run("customers", file, source.strip().lower(), _overrides(map_), report, address, "", jobs)


@app.command("purchases")
def import_purchases(
    file: Annotated[Path, typer.Argument(help="CSV or XLSX; the first row holds the headers")],
    source: Annotated[str, typer.Option(help="the channel the orders came from")],
    map_: MapOption = None,
    report: Annotated[Path | None, typer.Option(help="write the per-row report as CSV")] = None,
    purpose: Annotated[
        str,
        typer.Option(
            help="With --address: the purpose of the FindCustomers lookup that resolves a customer named by "
            "identifier (one per distinct customer, audited as a read; only the id is kept)."
        ),
    ] = "order_fulfilment",
    address: Address = "",
    jobs: Jobs = 0,
) -> None:
    """Record purchases; the customer is named by customer_id, member id, mobile, email, national id or external id.

    With --address: through RecordPurchases, each customer named by an identifier found with FindCustomers; the
    report is the same."""
    _run("purchases", file, source.strip().lower(), _overrides(map_), report, address, purpose, jobs)
