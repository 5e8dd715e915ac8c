"""``piivault analytics``: the pseudonymised export (CSV or Parquet) and the reference RFM consumer."""

from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault

app = typer.Typer(
    help="Pseudonymised purchases for analysts, and RFM segments computed from them.", no_args_is_help=True
)
PURCHASE_COLUMNS = (
    "pseudonym",
    "source",
    "order_ref",
    "store_id",
    "purchase_time",
    "amount",
    "currency",
    "items",
    "payment_method",
    "is_return",
)


@app.command("export")
def analytics_export(
    out: Annotated[Path, typer.Option(help="purchases file; tombstones go to <out stem>.tombstones.<format>")],
    format_: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    cursor_file: Annotated[
        Path | None, typer.Option(help="read the cursor from this file (if present) and write the next one to it")
    ] = None,
) -> None:
    """Export pseudonymised purchases of consenting customers, incrementally, plus tombstones to honour."""
    if format_ not in ("csv", "parquet"):
        fail("--format must be csv or parquet")
    cursor = cursor_file.read_text().strip() if cursor_file is not None and cursor_file.exists() else ""
    tombstones_out = out.with_name(f"{out.stem}.tombstones.{format_}")
    with tempfile.TemporaryDirectory() as scratch:
        purchases_csv = Path(scratch) / "purchases.csv" if format_ == "parquet" else out
        tombstones_csv = Path(scratch) / "tombstones.csv" if format_ == "parquet" else tombstones_out
        counts = Counter[str]()
        from audit.events import Caller
        from piivault.cli.common import operator

        with (
            opened_vault("analytics export", "analyst") as vault,
            purchases_csv.open("w", newline="", encoding="utf-8") as purchases_file,
            tombstones_csv.open("w", newline="", encoding="utf-8") as tombstones_file,
        ):
            purchases = csv.writer(purchases_file)
            tombstones = csv.writer(tombstones_file)
            purchases.writerow(PURCHASE_COLUMNS)
            tombstones.writerow(("pseudonym", "reason", "time"))
            caller = Caller(operator(), "analyst", "cli:analytics export", purpose="analytics")
            from vault.errors import InvalidArgument

            try:
                for page in vault.analytics.pages(caller, cursor, 10_000):
                    for p in page.purchases:
                        purchases.writerow(
                            (
                                p.pseudonym,
                                p.source,
                                p.order_ref,
                                p.store_id,
                                p.purchase_time.isoformat(),
                                f"{p.amount_minor / 100:.2f}",
                                p.currency,
                                p.items,
                                p.payment_method,
                                str(p.is_return).lower(),
                            )
                        )
                    for t in page.tombstones:
                        tombstones.writerow((t.pseudonym, t.reason, t.time.isoformat()))
                    counts.update(purchases=len(page.purchases), tombstones=len(page.tombstones))
                    cursor = page.cursor
            except InvalidArgument as error:
                fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))
        if format_ == "parquet":
            import duckdb

            for source, target in ((purchases_csv, out), (tombstones_csv, tombstones_out)):
                query = f"SELECT * FROM read_csv_auto('{source.as_posix()}')"  # noqa: S608 - our own temp path
                duckdb.sql(f"COPY ({query}) TO '{target.as_posix()}' (FORMAT parquet)")
    if cursor_file is not None:
        cursor_file.write_text(cursor + "\n")
    err.print(f"exported {counts['purchases']:,} purchases and {counts['tombstones']:,} tombstones to {out}")
    typer.echo(json.dumps({"next_cursor": cursor, **counts}))


@app.command("rfm")
def analytics_rfm(
    purchases: Annotated[Path, typer.Argument(help="a purchases file from `analytics export`")],
    tombstones: Annotated[Path | None, typer.Option(help="its tombstones file (default: beside it)")] = None,
    out: Annotated[Path | None, typer.Option(help="write per-pseudonym scores here as CSV")] = None,
) -> None:
    """Recency/frequency/monetary scores and segments (champions, loyal, new, at_risk, hibernating, potential)."""
    from piivault.rfm import SEGMENTS, rfm

    if not purchases.exists():
        fail("the purchases file does not exist")
    beside = purchases.with_name(f"{purchases.stem}.tombstones{purchases.suffix}")
    scores = rfm(purchases, tombstones or (beside if beside.exists() else None))
    if out is not None:
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("pseudonym", "recency_days", "frequency", "monetary", "r", "f", "m", "segment"))
            writer.writerows(
                (s.pseudonym, s.recency_days, s.frequency, f"{s.monetary:.2f}", s.r, s.f, s.m, s.segment)
                for s in scores
            )
    by_segment = Counter(s.segment for s in scores)
    table = Table("segment", "customers", "share", "avg frequency", "avg monetary")
    for segment in SEGMENTS:
        members = [s for s in scores if s.segment == segment]
        if members:
            table.add_row(
                segment,
                f"{len(members):,}",
                f"{len(members) / len(scores):.1%}",
                f"{sum(s.frequency for s in members) / len(members):.1f}",
                f"{sum(s.monetary for s in members) / len(members):.2f}",
            )
    Console().print(table)
    err.print(f"{len(scores):,} pseudonyms scored; {sum(by_segment.values()):,} in segments")
