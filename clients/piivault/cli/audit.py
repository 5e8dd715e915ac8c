"""``piivault audit``: what auditors run — query events, verify the chain, keep signed checkpoints."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault
from piivault.cli.remote import ADDRESS_HELP, api_client

if TYPE_CHECKING:
    import datetime

    from audit.events import AuditEvent
    from piivault.v1 import audit_pb2

Address = Annotated[str, typer.Option("--address", envvar="PIIVAULT_ADDRESS", help=ADDRESS_HELP)]

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
    address: Address = "",
) -> None:
    """List audit events, oldest first."""
    import csv
    import datetime as dt
    import itertools
    import json

    def moment(text: str, name: str) -> dt.datetime | None:
        if not text:
            return None
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            fail(f"--{name} must be an ISO 8601 time")
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    def micros(when: dt.datetime | None) -> int:
        return int(when.timestamp() * 1_000_000) if when is not None else 0

    if output not in ("table", "json", "csv"):
        fail("--format must be table, json or csv")
    start, end = moment(since, "since"), moment(until, "until")
    if address:
        with api_client(address) as client:
            found = client.audit.events(
                customer_id=customer_id,
                principal=principal,
                action=action,
                outcome=outcome,
                start_time=start,
                end_time=end,
                page_size=max(1, min(limit, 100_000)),
            )
            rows = [_api_row(event) for event in itertools.islice(found, max(limit, 0))]
    else:
        from audit.queries import AuditQueries, EventFilter

        where = EventFilter(customer_id, principal, action, outcome, micros(start), micros(end))
        with opened_vault("audit query", "auditor") as vault:
            rows = [_row(e) for chunk in AuditQueries(vault.database).events(where, 0, limit) for e in chunk]
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

    if output == "json":
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, row, strict=True))) + "\n")
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        Console().print(table)


def _row(event: AuditEvent) -> list[str]:
    import datetime as dt

    return _columns(event, dt.datetime.fromtimestamp(event.time_us / 1e6, dt.UTC))


def _api_row(event: audit_pb2.AuditEvent) -> list[str]:
    import datetime as dt

    return _columns(event, event.event_time.ToDatetime(tzinfo=dt.UTC))


def _columns(event: AuditEvent | audit_pb2.AuditEvent, when: datetime.datetime) -> list[str]:
    """One output row, the same whether the event was read in-process or through the API."""
    return [
        str(event.seq),
        when.isoformat(timespec="milliseconds"),
        event.principal,
        event.role,
        event.action,
        " ".join(event.customer_ids),
        " ".join(event.fields),
        event.purpose,
        event.outcome,
        event.request_id,
    ]


@app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        list[Path] | None, typer.Option(help="A checkpoint file saved by `audit checkpoint`; may be repeated.")
    ] = None,
    address: Address = "",
) -> None:
    """Recompute the audit chain; exit 0 only when it is intact."""
    import json

    documents: list[tuple[int, bytes, int, bytes, bytes]] = []
    for path in checkpoint or []:
        try:
            document = json.loads(path.read_text())
            documents.append(
                (
                    int(document["seq"]),
                    bytes.fromhex(document["head_mac"]),
                    int(document["time_us"]),
                    bytes.fromhex(document["public_key"]),
                    bytes.fromhex(document["signature"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            fail(f"{path} is not a checkpoint file written by `piivault audit checkpoint`")
    if address:
        from piivault.v1 import audit_pb2

        kept = [
            audit_pb2.Checkpoint(seq=seq, head_mac=mac, time_us=time_us, public_key=key, signature=signature)
            for seq, mac, time_us, key, signature in documents
        ]
        with api_client(address) as client:
            verdict = client.audit.verify_chain(kept)
        _report(
            verdict.intact,
            verdict.events_checked,
            verdict.head_seq,
            verdict.checkpoints_checked,
            verdict.first_bad_seq,
            verdict.problem,
        )
        return

    from audit.verify import Checkpoint

    trusted = [Checkpoint(*document) for document in documents]
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
    _report(
        report.intact,
        report.events_checked,
        report.head_seq,
        report.checkpoints_checked,
        report.first_bad_seq,
        report.problem,
    )


def _report(intact: bool, checked: int, head: int, checkpoints: int, first_bad: int | None, problem: str) -> None:
    if intact:
        err.print(f"[green]intact[/green]: {checked} events, head {head}, {checkpoints} checkpoints matched")
        return
    err.print(f"[red]broken[/red] at sequence {first_bad}: {problem}")
    raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint(address: Address = "") -> None:
    """Sign the current chain head and print the checkpoint as JSON, to keep outside the vault."""
    import json

    if address:
        with api_client(address) as client:
            latest: Any = client.audit.get_checkpoint().checkpoint
    else:
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
