"""``piivault purposes``: the purpose registry a server started with the same environment would enforce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from piivault.cli.common import fail


def show(
    file: Annotated[
        Path | None, typer.Option("--file", help="check this registry file instead of PIIVAULT_PURPOSES_FILE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show (and check) the purpose registry: legal basis, consent, fields in clear, roles, retention."""
    from consent.purposes import PurposeRegistry, RegistryError
    from vault.config import ConfigError, Settings

    try:
        path = file if file is not None else Settings.from_env().purposes_file
        registry = PurposeRegistry.load(path)
    except (ConfigError, RegistryError) as error:
        fail(str(error))
    if as_json:
        rows = [
            {
                "purpose": p.name,
                "legal_basis": p.legal_basis.value,
                "requires_consent": p.requires_consent,
                "separate_consent_for": sorted(p.sensitive_fields) if p.needs_separate_consent else [],
                "fields": sorted(p.fields),
                "roles": sorted(p.roles),
                "retention_days": p.retention_days,
                "description": p.description,
            }
            for p in registry
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"purposes ({path or 'built-in defaults'})")
    for column in ("purpose", "legal basis", "consent", "fields in clear", "roles", "retention"):
        table.add_column(column, no_wrap=column in ("purpose", "legal basis", "retention"))
    for p in registry:
        consent = "required" if p.requires_consent else "-"
        if p.needs_separate_consent:
            consent += " + separate for " + ", ".join(sorted(p.sensitive_fields))
        table.add_row(
            p.name,
            p.legal_basis.value,
            consent,
            ", ".join(sorted(p.fields)) or "(none)",
            ", ".join(sorted(p.roles)),
            f"{p.retention_days} d",
        )
    Console().print(table)
