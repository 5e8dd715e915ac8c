"""``piivault audit``: what auditors run — query events, verify the chain, keep signed checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault

if TYPE_CHECKING:
    from audit.events import AuditEvent

app = typer.Typer(help="Read and verify the audit log (auditors).", no_args_is_help=True)


@app.command("query")
def audit_query(
    customer_id: Annotated[str, typer.Option(help="Events concerning this customer.")] = "",
    principal: Annotated[str, typer.Option(help="Events by this principal.")] = "",
    action: Annotated[
        str, typer.Option(help="Events of this RPC, e.g. /piivault.v1.CustomerService/GetCustomer.")
    ] = "",
    outcome: Annotated[str, typer.Option(help="ok, denied, invalid, not_found, unauthenticated, ...")] = "",
    since: Annotated[str, typer.Option(help="ISO 8601 time, inclusive.")] = "",
    until: Annotated[str, typer.Option(help="ISO 8601 time, exclusive.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 1000,
    output: Annotated[str, typer.Option("--format", help="table, json (one event per line) or csv.")] = "table",
) -> None:
    """List audit events, oldest first."""
    import csv
    import datetime as dt
    import json

    from audit.queries import AuditQueries, EventFilter

    def micros(text: str, name: str) -> int:
        if not text:
            return 0
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            fail(f"--{name} must be an ISO 8601 time")
        return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp() * 1_000_000)

    if output not in ("table", "json", "csv"):
        fail("--format must be table, json or csv")
    where = EventFilter(customer_id, principal, action, outcome, micros(since, "since"), micros(until, "until"))
    with opened_vault("audit query", "auditor") as vault:
        events = [e for chunk in AuditQueries(vault.database).events(where, 0, limit) for e in chunk]
    columns = (
        "seq",
        "time",
        "principal",
        "role",
        "action",
        "customer_ids",
        "fields",
        "purpose",
        "outcome",
        "request_id",
    )

    def row(event: AuditEvent) -> list[str]:
        when = dt.datetime.fromtimestamp(event.time_us / 1e6, dt.UTC).isoformat(timespec="milliseconds")
        return [
            str(event.seq),
            when,
            event.principal,
            event.role,
            event.action,
            " ".join(event.customer_ids),
            " ".join(event.fields),
            event.purpose,
            event.outcome,
            event.request_id,
        ]

    if output == "json":
        for event in events:
            sys.stdout.write(json.dumps(dict(zip(columns, row(event), strict=True))) + "\n")
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(row(event) for event in events)
    else:
        table = Table(*columns)
        for event in events:
            table.add_row(*row(event))
        Console().print(table)


@app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        list[Path] | None, typer.Option(help="A checkpoint file saved by `audit checkpoint`; may be repeated.")
    ] = None,
) -> None:
    """Recompute the audit chain; exit 0 only when it is intact."""
    import json

    from audit.verify import Checkpoint

    trusted = []
    for path in checkpoint or []:
        try:
            document = json.loads(path.read_text())
            trusted.append(
                Checkpoint(
                    int(document["seq"]),
                    bytes.fromhex(document["head_mac"]),
                    int(document["time_us"]),
                    bytes.fromhex(document["public_key"]),
                    bytes.fromhex(document["signature"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            fail(f"{path} is not a checkpoint file written by `piivault audit checkpoint`")
    with (
        opened_vault("audit verify", "auditor") as vault,
        Progress(*Progress.get_default_columns(), console=err) as bar,
    ):
        task = bar.add_task("verifying", total=None)
        report = vault.audit_verifier.verify(
            trusted,
            progress=lambda done, total: bar.update(task, completed=done, total=max(total, 1)),
            workers=os.cpu_count() or 1,
        )
    if report.intact:
        err.print(
            f"[green]intact[/green]: {report.events_checked} events, head {report.head_seq}, "
            f"{report.checkpoints_checked} checkpoints matched"
        )
        return
    err.print(f"[red]broken[/red] at sequence {report.first_bad_seq}: {report.problem}")
    raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the current chain head and print the checkpoint as JSON, to keep outside the vault."""
    import json

    with opened_vault("audit checkpoint", "auditor") as vault:
        vault.audit.checkpoint_now()
        latest = vault.audit_verifier.checkpoints()[-1]
    sys.stdout.write(
        json.dumps(
            {
                "seq": latest.seq,
                "head_mac": latest.head_mac.hex(),
                "time_us": latest.time_us,
                "public_key": latest.public_key.hex(),
                "signature": latest.signature.hex(),
            }
        )
        + "\n"
    )
