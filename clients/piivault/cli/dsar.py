"""``piivault dsar``: the DPO's data-subject requests. Every step is audited under the local operator's name."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault, operator

if TYPE_CHECKING:
    from audit.events import Caller
    from vault.app import Vault
    from vault.dsar.models import DsarRequest

app = typer.Typer(help="Data-subject requests: open, verify, export, erase, reject (role dpo).", no_args_is_help=True)
T = TypeVar("T")
TYPES = "access, portability, erasure, rectification or restriction"


@contextmanager
def _dpo(action: str) -> Iterator[tuple[Vault, Caller]]:
    from audit.events import Caller

    with opened_vault(f"dsar {action}", "dpo") as vault:
        yield vault, Caller(operator(), "dpo", f"cli:dsar {action}", purpose="dsar")


def _run(step: Callable[[], T]) -> T:
    """Domain errors become one line on stderr and exit code 2; their messages never hold personal data."""
    from vault.errors import InvalidArgument, PiivaultError

    try:
        return step()
    except InvalidArgument as error:
        fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))
    except PiivaultError as error:
        fail(str(error))


def _show(requests: list[DsarRequest], today: Any, as_json: bool = False) -> None:
    if as_json:
        rows = [
            {
                "request_id": r.request_id,
                "type": r.type.value,
                "status": r.status.value,
                "customer_id": r.customer_id,
                "open_time": r.open_time.isoformat(),
                "due_date": r.due_date.isoformat(),
                "overdue": r.overdue(today),
                "receipt_id": r.receipt_id,
            }
            for r in requests
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("request_id", "type", "status", "due", "overdue"):
        table.add_column(column, no_wrap=True)
    for r in requests:
        table.add_row(
            r.request_id,
            r.type.value,
            r.status.value,
            r.due_date.isoformat(),
            "[red]OVERDUE[/red]" if r.overdue(today) else "",
        )
    Console().print(table)


@app.command("open")
def dsar_open(
    type_: Annotated[str, typer.Option("--type", help=TYPES)],
    customer_id: Annotated[str, typer.Option(help="the customer's id")] = "",
    mobile: Annotated[str, typer.Option(help="or: the customer's mobile, any spelling")] = "",
    email: Annotated[str, typer.Option(help="or: e-mail")] = "",
    national_id: Annotated[str, typer.Option(help="or: national id")] = "",
    member_id: Annotated[str, typer.Option(help="or: member id")] = "",
) -> None:
    """Open a request for the customer holding one identifier."""
    from vault.customers.models import IdentifierKind
    from vault.dsar.models import DsarType

    given = {
        None: customer_id,
        IdentifierKind.MOBILE: mobile,
        IdentifierKind.EMAIL: email,
        IdentifierKind.NATIONAL_ID: national_id,
        IdentifierKind.MEMBER_ID: member_id,
    }
    chosen = [(kind, value) for kind, value in given.items() if value]
    if len(chosen) != 1:
        fail("give exactly one of --customer-id, --mobile, --email, --national-id, --member-id")
    try:
        kind_of_request = DsarType(type_)
    except ValueError:
        fail(f"--type must be one of: {TYPES}")
    with _dpo("open") as (vault, caller):
        opened = _run(lambda: vault.dsar.open(caller, chosen[0][0], chosen[0][1], kind_of_request))
        _show([opened], vault.dsar.today())


@app.command("list")
def dsar_list(
    status: Annotated[str, typer.Option(help="received, verified, completed or rejected")] = "",
    overdue: Annotated[bool, typer.Option("--overdue", help="only overdue requests")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List requests, overdue first."""
    from vault.dsar.models import DsarStatus

    try:
        wanted = DsarStatus(status) if status else None
    except ValueError:
        fail("--status must be received, verified, completed or rejected")
    with _dpo("list") as (vault, caller):
        _show(_run(lambda: vault.dsar.list(caller, wanted, overdue, 1000)), vault.dsar.today(), as_json)


@app.command("show")
def dsar_show(request_id: Annotated[str, typer.Argument()]) -> None:
    """One request, with its rejection text if it was rejected."""
    with _dpo("show") as (vault, caller):
        request = _run(lambda: vault.dsar.get(caller, request_id))
        _show([request], vault.dsar.today())
    if request.rejection_reason is not None:
        err.print(f"rejected: {request.rejection_reason.value}: {request.rejection_text}")


@app.command("verify")
def dsar_verify(request_id: Annotated[str, typer.Argument()]) -> None:
    """Record that the requester's identity was verified."""
    with _dpo("verify") as (vault, caller):
        _show([_run(lambda: vault.dsar.verify(caller, request_id))], vault.dsar.today())


@app.command("reject")
def dsar_reject(
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[
        str,
        typer.Option(help="identity_not_verified, legal_retention, legal_hold, manifestly_unfounded, duplicate, other"),
    ],
    text: Annotated[str, typer.Option(help="the explanation given to the customer (required, PIPL art. 50)")],
) -> None:
    """Reject a request with a reason code and text."""
    from vault.dsar.models import RejectionReason

    try:
        code = RejectionReason(reason)
    except ValueError:
        fail("--reason must be one of: " + ", ".join(r.value for r in RejectionReason))
    with _dpo("reject") as (vault, caller):
        _show([_run(lambda: vault.dsar.reject(caller, request_id, code, text))], vault.dsar.today())


@app.command("export")
def dsar_export(
    request_id: Annotated[str, typer.Argument()],
    out: Annotated[Path, typer.Option(help="where to write the zip package (created mode 0600)")],
) -> None:
    """Export a verified access or portability request as a signed zip package."""
    import os

    with _dpo("export") as (vault, caller), Progress(console=err, transient=True) as progress:
        progress.add_task("building the export package", total=None)
        package = _run(lambda: vault.dsar.export(caller, request_id))
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when the file already existed with wider permissions
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(package)
    err.print(f"wrote {out} ({len(package):,} bytes); `piivault dsar check {out}` verifies it")


@app.command("erase")
def dsar_erase(
    request_id: Annotated[str, typer.Argument()],
    receipt: Annotated[Path | None, typer.Option(help="write the signed erasure receipt here")] = None,
) -> None:
    """Erase the customer of a verified erasure request (refused under legal hold or restriction)."""
    with _dpo("erase") as (vault, caller):
        completed, signed = _run(lambda: vault.dsar.erase(caller, request_id))
        _show([completed], vault.dsar.today())
    if receipt is not None:
        receipt.write_bytes(signed)
    else:
        typer.echo(signed.decode())


@app.command("hold")
def dsar_hold(
    customer_id: Annotated[str, typer.Argument()],
    lift: Annotated[bool, typer.Option("--lift", help="lift the hold instead")] = False,
) -> None:
    """Place (or lift) a legal hold, which blocks erasure."""
    with _dpo("hold") as (vault, caller):
        _run(lambda: vault.dsar.set_legal_hold(caller, customer_id, not lift))
    err.print(("lifted the legal hold on " if lift else "placed a legal hold on ") + customer_id)


@app.command("check")
def dsar_check(package: Annotated[Path, typer.Argument(help="an export package written by `dsar export`")]) -> None:
    """Verify an export package: every file against the manifest, the manifest against the vault's signature."""
    from vault.dsar.export import PackageError, verify_package

    with _dpo("check") as (vault, _):
        key = vault.dsar.public_key
    try:
        manifest = verify_package(package.read_bytes(), key)
    except OSError as error:
        fail(f"cannot read the package ({type(error).__name__})")
    except PackageError as error:
        fail(str(error))
    typer.echo(json.dumps({"intact": True, "files": len(manifest["files"]), "request_id": manifest["request_id"]}))
