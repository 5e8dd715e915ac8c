"""``piivault token``: API tokens. A token is printed once; only its hash is stored. Every command is audited."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault

app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@app.command("create")
def token_create(
    principal: Annotated[str, typer.Option(help="Who uses the token, e.g. pos-shanghai.")],
    role: Annotated[str, typer.Option(help="service, support, marketing, analyst, dpo, auditor or admin.")],
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from vault.errors import InvalidArgument

    with opened_vault("token create", "admin") as vault:
        try:
            issued = vault.tokens.create(principal, role)
        except InvalidArgument as error:
            fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))
    err.print(f"token {issued.token_id} for {issued.principal} ({issued.role}); it is shown only this once:")
    sys.stdout.write(issued.secret + "\n")


@app.command("list")
def token_list() -> None:
    """List tokens (ids, principals, roles; never the secrets)."""
    table = Table("token_id", "principal", "role", "created", "revoked")
    with opened_vault("token list", "admin") as vault:
        infos = vault.tokens.list()
    for info in infos:
        table.add_row(
            info.token_id,
            info.principal,
            info.role,
            info.create_time.isoformat(timespec="seconds"),
            info.revoke_time.isoformat(timespec="seconds") if info.revoke_time else "",
        )
    Console().print(table)


@app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token_id shown by `token list`.")]) -> None:
    """Revoke a token; it stops working within the token cache TTL (5 s by default)."""
    from vault.errors import NotFound

    with opened_vault("token revoke", "admin") as vault:
        try:
            vault.tokens.revoke(token_id)
        except NotFound as error:
            fail(str(error))
    err.print(f"revoked {token_id}")
