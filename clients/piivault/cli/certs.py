"""``piivault cert``: client certificates for mTLS. Only a fingerprint is stored, never the certificate or its subject.

Every command is audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault

app = typer.Typer(help="Register, list and revoke client certificates (mTLS).", no_args_is_help=True)


@app.command("add")
def cert_add(
    file: Annotated[
        Path,
        typer.Argument(help="PEM (or DER) file holding the one client certificate.", dir_okay=False),
    ],
    principal: Annotated[str, typer.Option(help="Who presents the certificate, e.g. pos-shanghai.")],
    role: Annotated[str, typer.Option(help="service, support, marketing, analyst, dpo, auditor or admin.")],
) -> None:
    """Register a client certificate for a principal and role; it authenticates calls that send no token."""
    from vault.errors import FailedPrecondition, InvalidArgument

    try:
        certificate = file.read_bytes()
    except OSError:
        fail(f"cannot read {file}")
    with opened_vault("cert add", "admin") as vault:
        try:
            info = vault.certificates.register(certificate, principal, role)
        except InvalidArgument as error:
            fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))
        except FailedPrecondition as error:
            fail(str(error))
    err.print(
        f"registered {info.cert_id} for {info.principal} ({info.role}), "
        f"valid until {info.not_after.isoformat(timespec='seconds')}"
    )


@app.command("list")
def cert_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List registered client certificates (ids, principals, roles, validity; never the certificates)."""
    with opened_vault("cert list", "admin") as vault:
        infos = vault.certificates.list()
    if as_json:
        rows = [
            {
                "cert_id": info.cert_id,
                "principal": info.principal,
                "role": info.role,
                "not_after": info.not_after.isoformat(timespec="seconds"),
                "create_time": info.create_time.isoformat(timespec="seconds"),
                "revoke_time": info.revoke_time.isoformat(timespec="seconds") if info.revoke_time else None,
            }
            for info in infos
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("cert_id", "principal", "role", "valid until", "created", "revoked")
    for info in infos:
        table.add_row(
            info.cert_id,
            info.principal,
            info.role,
            info.not_after.isoformat(timespec="seconds"),
            info.create_time.isoformat(timespec="seconds"),
            info.revoke_time.isoformat(timespec="seconds") if info.revoke_time else "",
        )
    Console().print(table)


@app.command("revoke")
def cert_revoke(cert_id: Annotated[str, typer.Argument(help="The cert_id shown by `cert list`.")]) -> None:
    """Revoke a client certificate; it stops working within the token cache TTL (5 s by default)."""
    from vault.errors import NotFound

    with opened_vault("cert revoke", "admin") as vault:
        try:
            vault.certificates.revoke(cert_id)
        except NotFound as error:
            fail(str(error))
    err.print(f"revoked {cert_id}")
