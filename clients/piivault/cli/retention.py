"""``piivault retention run``: erase customers inactive past the retention period; let expired consents lapse."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from piivault.cli.common import err, opened_vault

app = typer.Typer(help="Retention: erase inactive customers, lapse expired consents.", no_args_is_help=True)


@app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be done; change nothing")] = False,
) -> None:
    """Apply the retention rules once (PIIVAULT_RETENTION_INACTIVE_DAYS, each purpose's retention_days)."""
    with opened_vault("retention run" + (" --dry-run" if dry_run else ""), "dpo") as vault:
        plan = vault.retention.plan() if dry_run else vault.retention.run()
    verb = "would" if dry_run else "did"
    err.print(
        f"{verb} erase {len(plan.erase)} inactive customers; {len(plan.blocked)} held back by legal hold or "
        f"restriction; {verb} lapse {len(plan.lapse)} expired consents"
    )
    typer.echo(
        json.dumps(
            {
                "dry_run": dry_run,
                "erase": plan.erase,
                "blocked": plan.blocked,
                "lapse": [{"customer_id": c, "purpose": p, "scope": s} for c, p, s in plan.lapse],
            },
            indent=2,
        )
    )
