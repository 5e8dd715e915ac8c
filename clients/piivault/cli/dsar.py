"""``piivault dsar``: the DPO's data-subject requests.

In-process (the default) every step is audited under the local operator's name; with ``--address`` (or
PIIVAULT_ADDRESS) the step goes through DsarService with PIIVAULT_TOKEN (role ``dpo``) and is audited under the token's
principal. Both print the same tables and JSON and write the same files. ``dsar check`` runs in-process only: it
verifies a package against the vault's DSAR signing key, which the API does not serve.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault, operator
from piivault.cli.remote import Address, api_client, in_process_only

if TYPE_CHECKING:
    from audit.events import Caller
    from piivault.client import PiiVault
    from piivault.v1 import dsar_pb2
    from vault.app import Vault
    from vault.dsar.models import DsarRequest

app = typer.Typer(
    help="Data-subject requests: open, verify, export, erase, reject. In-process as the local operator, or with "
    "--address through DsarService (a dpo token).",
    no_args_is_help=True,
)
T = TypeVar("T")
TYPE_NAMES = ("access", "portability", "erasure", "rectification", "restriction")
STATUS_NAMES = ("received", "verified", "completed", "rejected")
REASON_NAMES = ("identity_not_verified", "legal_retention", "legal_hold", "manifestly_unfounded", "duplicate", "other")
TYPES = "access, portability, erasure, rectification or restriction"


@dataclass(frozen=True)
class Shown:
    """One request as the commands print it, from the domain object (in-process) or the API's message."""

    request_id: str
    type: str
    status: str
    customer_id: str
    open_time: str
    due_date: str
    overdue: bool
    receipt_id: str
    rejection_reason: str = ""
    rejection_text: str = field(default="", repr=False)  # the DPO's words to the customer


def _of_domain(request: DsarRequest, today: dt.date) -> Shown:
    return Shown(
        request.request_id,
        request.type.value,
        request.status.value,
        request.customer_id,
        request.open_time.isoformat(),
        request.due_date.isoformat(),
        request.overdue(today),
        request.receipt_id,
        request.rejection_reason.value if request.rejection_reason is not None else "",
        request.rejection_text,
    )


def _of_api(request: dsar_pb2.DsarRequest) -> Shown:
    from piivault.v1 import dsar_pb2 as pb

    reason = request.rejection_reason
    return Shown(
        request.request_id,
        pb.DsarType.Name(request.type).removeprefix("DSAR_TYPE_").lower(),
        pb.DsarStatus.Name(request.status).removeprefix("DSAR_STATUS_").lower(),
        request.customer_id,
        request.open_time.ToDatetime(tzinfo=dt.UTC).isoformat(),
        request.due_date,
        request.overdue,
        request.receipt_id,
        pb.RejectionReason.Name(reason).removeprefix("REJECTION_REASON_").lower() if reason else "",
        request.rejection_text,
    )


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


def _step(
    action: str,
    address: str,
    local: Callable[[Vault, Caller, dt.date], T],
    remote: Callable[[PiiVault], T],
) -> T:
    """One DSAR step: through the API when an address is given (SDK errors end the command, like domain errors),
    else in-process as the local operator (``local`` gets the vault, the caller and the vault's today)."""
    if address:
        with api_client(address) as client:
            return remote(client)
    with _dpo(action) as (vault, caller):
        return _run(lambda: local(vault, caller, vault.dsar.today()))


def _show(requests: list[Shown], as_json: bool = False) -> None:
    if as_json:
        rows = [
            {
                "request_id": r.request_id,
                "type": r.type,
                "status": r.status,
                "customer_id": r.customer_id,
                "open_time": r.open_time,
                "due_date": r.due_date,
                "overdue": r.overdue,
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
        table.add_row(r.request_id, r.type, r.status, r.due_date, "[red]OVERDUE[/red]" if r.overdue else "")
    Console().print(table)


@app.command("open")
def dsar_open(
    type_: Annotated[str, typer.Option("--type", help=TYPES)],
    customer_id: Annotated[str, typer.Option(help="the customer's id")] = "",
    mobile: Annotated[str, typer.Option(help="or: the customer's mobile, any spelling")] = "",
    email: Annotated[str, typer.Option(help="or: e-mail")] = "",
    national_id: Annotated[str, typer.Option(help="or: national id")] = "",
    member_id: Annotated[str, typer.Option(help="or: member id")] = "",
    address: Address = "",
) -> None:
    """Open a request for the customer holding one identifier."""
    given = {
        "customer_id": customer_id,
        "mobile": mobile,
        "email": email,
        "national_id": national_id,
        "member_id": member_id,
    }
    chosen = [(name, value) for name, value in given.items() if value]
    if len(chosen) != 1:
        fail("give exactly one of --customer-id, --mobile, --email, --national-id, --member-id")
    if type_ not in TYPE_NAMES:
        fail(f"--type must be one of: {TYPES}")
    [(subject, value)] = chosen

    def local(vault: Vault, caller: Caller, today: dt.date) -> Shown:
        from vault.customers.models import IdentifierKind
        from vault.dsar.models import DsarType

        kind = None if subject == "customer_id" else IdentifierKind(subject)
        return _of_domain(vault.dsar.open(caller, kind, value, DsarType(type_)), today)

    def remote(client: PiiVault) -> Shown:
        from piivault.v1 import dsar_pb2 as pb

        opened = client.dsar.open(
            pb.DsarType.Value("DSAR_TYPE_" + type_.upper()),
            customer_id=customer_id or None,
            mobile=mobile or None,
            email=email or None,
            national_id=national_id or None,
            member_id=member_id or None,
        )
        return _of_api(opened.request)

    _show([_step("open", address, local, remote)])


@app.command("list")
def dsar_list(
    status: Annotated[str, typer.Option(help="received, verified, completed or rejected")] = "",
    overdue: Annotated[bool, typer.Option("--overdue", help="only overdue requests")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    address: Address = "",
) -> None:
    """List requests (at most 1,000), overdue first."""
    if status and status not in STATUS_NAMES:
        fail("--status must be received, verified, completed or rejected")

    def local(vault: Vault, caller: Caller, today: dt.date) -> list[Shown]:
        from vault.dsar.models import DsarStatus

        found = vault.dsar.list(caller, DsarStatus(status) if status else None, overdue, 1000)
        return [_of_domain(r, today) for r in found]

    def remote(client: PiiVault) -> list[Shown]:
        from piivault.v1 import dsar_pb2 as pb

        wanted = pb.DsarStatus.Value("DSAR_STATUS_" + status.upper()) if status else pb.DSAR_STATUS_UNSPECIFIED
        found = client.dsar.list(status=wanted, overdue_only=overdue, page_size=1000)
        return [_of_api(r) for r in found.requests]

    _show(_step("list", address, local, remote), as_json)


@app.command("show")
def dsar_show(request_id: Annotated[str, typer.Argument()], address: Address = "") -> None:
    """One request, with its rejection text if it was rejected."""
    request = _step(
        "show",
        address,
        lambda vault, caller, today: _of_domain(vault.dsar.get(caller, request_id), today),
        lambda client: _of_api(client.dsar.get(request_id).request),
    )
    _show([request])
    if request.rejection_reason:
        err.print(f"rejected: {request.rejection_reason}: {escape(request.rejection_text)}")


@app.command("verify")
def dsar_verify(request_id: Annotated[str, typer.Argument()], address: Address = "") -> None:
    """Record that the requester's identity was verified."""
    verified = _step(
        "verify",
        address,
        lambda vault, caller, today: _of_domain(vault.dsar.verify(caller, request_id), today),
        lambda client: _of_api(client.dsar.verify(request_id).request),
    )
    _show([verified])


@app.command("reject")
def dsar_reject(
    request_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help=", ".join(REASON_NAMES))],
    text: Annotated[str, typer.Option(help="the explanation given to the customer (required, PIPL art. 50)")],
    address: Address = "",
) -> None:
    """Reject a request with a reason code and text."""
    if reason not in REASON_NAMES:
        fail("--reason must be one of: " + ", ".join(REASON_NAMES))

    def local(vault: Vault, caller: Caller, today: dt.date) -> Shown:
        from vault.dsar.models import RejectionReason

        return _of_domain(vault.dsar.reject(caller, request_id, RejectionReason(reason), text), today)

    def remote(client: PiiVault) -> Shown:
        from piivault.v1 import dsar_pb2 as pb

        code = pb.RejectionReason.Value("REJECTION_REASON_" + reason.upper())
        return _of_api(client.dsar.reject(request_id, reason=code, text=text).request)

    _show([_step("reject", address, local, remote)])


@app.command("export")
def dsar_export(
    request_id: Annotated[str, typer.Argument()],
    out: Annotated[Path, typer.Option(help="where to write the zip package (created mode 0600)")],
    address: Address = "",
) -> None:
    """Export a verified access or portability request as a signed zip package."""
    import os

    with Progress(console=err, transient=True) as progress:
        progress.add_task("building the export package", total=None)
        package = _step(
            "export",
            address,
            lambda vault, caller, _: vault.dsar.export(caller, request_id),
            lambda client: client.dsar.export_data(request_id),
        )
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when the file already existed with wider permissions
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(package)
    err.print(f"wrote {out} ({len(package):,} bytes); `piivault dsar check {out}` verifies it")


@app.command("erase")
def dsar_erase(
    request_id: Annotated[str, typer.Argument()],
    receipt: Annotated[Path | None, typer.Option(help="write the signed erasure receipt here")] = None,
    address: Address = "",
) -> None:
    """Erase the customer of a verified erasure request (refused under legal hold or restriction)."""

    def local(vault: Vault, caller: Caller, today: dt.date) -> tuple[Shown, bytes]:
        completed, signed = vault.dsar.erase(caller, request_id)
        return _of_domain(completed, today), signed

    def remote(client: PiiVault) -> tuple[Shown, bytes]:
        erased = client.dsar.erase(request_id)
        return _of_api(erased.request), erased.receipt

    completed, signed = _step("erase", address, local, remote)
    _show([completed])
    if receipt is not None:
        receipt.write_bytes(signed)
    else:
        typer.echo(signed.decode())


@app.command("hold")
def dsar_hold(
    customer_id: Annotated[str, typer.Argument()],
    lift: Annotated[bool, typer.Option("--lift", help="lift the hold instead")] = False,
    address: Address = "",
) -> None:
    """Place (or lift) a legal hold, which blocks erasure."""
    _step(
        "hold",
        address,
        lambda vault, caller, _: vault.dsar.set_legal_hold(caller, customer_id, not lift),
        lambda client: client.dsar.set_legal_hold(customer_id, not lift),
    )
    err.print(("lifted the legal hold on " if lift else "placed a legal hold on ") + customer_id)


@app.command("check")
def dsar_check(
    package: Annotated[Path, typer.Argument(help="an export package written by `dsar export`")],
    address: Annotated[
        str,
        typer.Option(
            "--address",
            envvar="PIIVAULT_ADDRESS",
            help="Refused: the check needs the vault's DSAR signing key, which the API does not serve.",
        ),
    ] = "",
) -> None:
    """Verify an export package: every file against the manifest, the manifest against the vault's signature.
    In-process only (on the vault's host)."""
    in_process_only(address, "dsar check", "the API does not serve the DSAR signing key the check needs")
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
