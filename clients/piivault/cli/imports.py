"""``piivault import``: customers and purchases from a channel's CSV or XLSX file, merged instead of duplicated."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from piivault.cli.common import err, fail, opened_vault, operator

if TYPE_CHECKING:
    from vault.imports.service import ImportSummary

app = typer.Typer(
    help="Import customers or purchases from CSV (UTF-8, BOM, GBK/GB18030) or XLSX.", no_args_is_help=True
)
MapOption = Annotated[list[str] | None, typer.Option("--map", help="HEADER=FIELD, e.g. 手机号码=mobile (repeatable)")]


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
    err.print(", ".join(f"{count:,} {outcome}" for outcome, count in sorted(summary.counts.items())))
    if conflicts:
        err.print(f"{conflicts:,} rows disagreed with stored values (kept as stored; see the report)")
    typer.echo(json.dumps({**summary.counts, "conflicts": conflicts}))


def _run(kind: str, file: Path, source: str, overrides: dict[str, str], report: Path | None) -> None:
    from audit.events import Caller
    from vault.imports.reader import ReadError, read_table
    from vault.imports.service import CUSTOMER_FIELDS, PURCHASE_FIELDS, ImportService

    fields = CUSTOMER_FIELDS if kind == "customers" else PURCHASE_FIELDS
    try:
        table = read_table(file, overrides, fields)
    except ReadError as error:
        fail(str(error))
    err.print("columns: " + ", ".join(f"{header} → {field}" for header, field in table.columns.items()))
    with (
        opened_vault(f"import {kind}", "service") as vault,
        Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err) as progress,
    ):
        task = progress.add_task(f"importing {kind}", total=None)
        service = ImportService(vault.customers, vault.purchases, lambda n: progress.advance(task, n))
        caller = Caller(operator(), "service", f"cli:import {kind}", purpose="")
        method = service.customers if kind == "customers" else service.purchases
        summary = method(caller, source, table.rows)
    _report(summary, report)


@app.command("customers")
def import_customers(
    file: Annotated[Path, typer.Argument(help="CSV or XLSX; the first row holds the headers")],
    source: Annotated[str, typer.Option(help="the channel, e.g. pos or miniprogram; external ids are filed under it")],
    map_: MapOption = None,
    report: Annotated[Path | None, typer.Option(help="write the per-row report (no personal data) as CSV")] = None,
) -> None:
    """Create new customers; merge rows that match a stored one (fill empty fields, add the external ref)."""
    _run("customers", file, source.strip().lower(), _overrides(map_), report)


@app.command("purchases")
def import_purchases(
    file: Annotated[Path, typer.Argument(help="CSV or XLSX; the first row holds the headers")],
    source: Annotated[str, typer.Option(help="the channel the orders came from")],
    map_: MapOption = None,
    report: Annotated[Path | None, typer.Option(help="write the per-row report as CSV")] = None,
) -> None:
    """Record purchases; the customer is named by customer_id, member id, mobile, email, national id or external id."""
    _run("purchases", file, source.strip().lower(), _overrides(map_), report)
