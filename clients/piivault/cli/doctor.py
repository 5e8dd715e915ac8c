"""``piivault doctor``: one verdict per check of the deployment; exit code 1 if any check fails."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def doctor(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Check configuration, TLS files, database and schema, key provider, keyring permissions, audit chain, clocks."""
    from vault.doctor import FAIL, WARN, diagnose

    verdicts = diagnose()
    if as_json:
        typer.echo(json.dumps([{"check": v.check, "result": v.result, "detail": v.detail} for v in verdicts], indent=2))
    else:
        table = Table("check", "result", "detail")
        colours = {FAIL: "red", WARN: "yellow"}
        for v in verdicts:
            colour = colours.get(v.result, "green")
            table.add_row(v.check, f"[{colour}]{v.result.upper()}[/{colour}]", v.detail)
        Console().print(table)
    if any(v.result == FAIL for v in verdicts):
        raise typer.Exit(1)
