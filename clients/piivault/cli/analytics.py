"""``piivault analytics``: the pseudonymised export (CSV or Parquet) and the reference RFM consumer.

``analytics export`` runs in-process, or with ``--address`` (or PIIVAULT_ADDRESS) through
AnalyticsService.ExportPurchases with PIIVAULT_TOKEN (role ``analyst``); ``analytics rfm`` reads an export file alone
and needs no vault.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault, operator
from piivault.cli.remote import Address, api_client

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from piivault.v1 import analytics_pb2
    from vault.purchases.analytics import FeedPage, FeedPurchase

app = typer.Typer(
    help="Pseudonymised purchases for analysts (export: in-process, or with --address through AnalyticsService and an "
    "analyst token), and RFM segments computed from an export file alone.",
    no_args_is_help=True,
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
PAGE = 10_000  # records per page, the most ExportPurchases sends in one message


@dataclass(frozen=True)
class Page:
    """One page of the export as CSV rows, from the domain (in-process) or an ExportPurchases message."""

    purchases: list[tuple[str, ...]]
    tombstones: list[tuple[str, ...]]
    cursor: str


@app.command("export")
def analytics_export(
    out: Annotated[Path, typer.Option(help="purchases file; tombstones go to <out stem>.tombstones.<format>")],
    format_: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    cursor_file: Annotated[
        Path | None, typer.Option(help="read the cursor from this file (if present) and write the next one to it")
    ] = None,
    address: Address = "",
) -> None:
    """Export pseudonymised purchases of consenting customers, incrementally, plus tombstones to honour.

    In-process as the local operator, or with --address through AnalyticsService.ExportPurchases (role analyst):
    the same files and cursor either way."""
    if format_ not in ("csv", "parquet"):
        fail("--format must be csv or parquet")
    cursor = cursor_file.read_text().strip() if cursor_file is not None and cursor_file.exists() else ""
    tombstones_out = out.with_name(f"{out.stem}.tombstones.{format_}")
    # Written aside first: a failed export (a refused token, a bad cursor, a lost connection) leaves no files behind.
    with tempfile.TemporaryDirectory() as scratch:
        purchases_csv, tombstones_csv = Path(scratch) / "purchases.csv", Path(scratch) / "tombstones.csv"
        counts = Counter[str]()
        with (
            _pages(address, cursor) as pages,
            purchases_csv.open("w", newline="", encoding="utf-8") as purchases_file,
            tombstones_csv.open("w", newline="", encoding="utf-8") as tombstones_file,
        ):
            purchases = csv.writer(purchases_file)
            tombstones = csv.writer(tombstones_file)
            purchases.writerow(PURCHASE_COLUMNS)
            tombstones.writerow(("pseudonym", "reason", "time"))
            for page in pages:
                purchases.writerows(page.purchases)
                tombstones.writerows(page.tombstones)
                counts.update(purchases=len(page.purchases), tombstones=len(page.tombstones))
                cursor = page.cursor
        for source, target in ((purchases_csv, out), (tombstones_csv, tombstones_out)):
            if format_ == "csv":
                shutil.move(source, target)
                continue
            import duckdb

            query = f"SELECT * FROM read_csv_auto('{source.as_posix()}')"  # noqa: S608 - our own temp path
            duckdb.sql(f"COPY ({query}) TO '{target.as_posix()}' (FORMAT parquet)")
    if cursor_file is not None:
        cursor_file.write_text(cursor + "\n")
    err.print(f"exported {counts['purchases']:,} purchases and {counts['tombstones']:,} tombstones to {out}")
    typer.echo(json.dumps({"next_cursor": cursor, **counts}))


@contextmanager
def _pages(address: str, cursor: str) -> Iterator[Iterator[Page]]:
    """The export's pages after ``cursor``; an error while reading them ends the command (exit code 2)."""
    if address:
        with api_client(address) as client, client.analytics.export_purchases(cursor=cursor, page_size=PAGE) as stream:
            yield (_api_page(page) for page in stream)
        return
    from audit.events import Caller
    from vault.errors import InvalidArgument

    with opened_vault("analytics export", "analyst") as vault:
        caller = Caller(operator(), "analyst", "cli:analytics export", purpose="analytics")
        try:
            yield (_domain_page(page) for page in vault.analytics.pages(caller, cursor, PAGE))
        except InvalidArgument as error:
            fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))


def _row(p: FeedPurchase | analytics_pb2.AnalyticsPurchase, purchase_time: str) -> tuple[str, ...]:
    """One purchase as a line of the export, in ``PURCHASE_COLUMNS`` order (in-process or from the API alike)."""
    amount = f"{p.amount_minor / 100:.2f}"
    returned = str(p.is_return).lower()
    return (p.pseudonym, p.source, p.order_ref, p.store_id, purchase_time, amount, p.currency, str(p.items),
            p.payment_method, returned)  # fmt: skip


def _domain_page(page: FeedPage) -> Page:
    return Page(
        [_row(p, p.purchase_time.isoformat()) for p in page.purchases],
        [(t.pseudonym, t.reason, t.time.isoformat()) for t in page.tombstones],
        page.cursor,
    )


def _api_page(page: analytics_pb2.ExportPurchasesResponse) -> Page:
    def moment(stamp: Timestamp) -> str:
        return stamp.ToDatetime(tzinfo=dt.UTC).isoformat()

    return Page(
        [_row(p, moment(p.purchase_time)) for p in page.purchases],
        [(t.pseudonym, t.reason, moment(t.time)) for t in page.tombstones],
        page.next_cursor,
    )


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
