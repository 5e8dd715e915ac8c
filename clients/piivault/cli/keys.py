"""``piivault keys``: the key-encryption key — status, online rotation with a progress bar, retiring versions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault

if TYPE_CHECKING:
    from vault.keys.rotation import KeyRotation, RewrapProgress

app = typer.Typer(help="Key-encryption key: status, rotation, retiring old versions.", no_args_is_help=True)


@app.command("status")
def keys_status() -> None:
    """Show KEK versions and how many wrapped keys sit on each."""
    with _key_rotation("keys status") as keys:
        status, counts = keys.status()
    Console().print(
        f"provider [bold]{status.provider}[/bold] key {status.key_name}: latest v{status.latest_version}, "
        f"minimum decryption v{status.min_decryption_version}"
    )
    table = Table("KEK version", "customer DEKs", "service keys")
    for version in sorted(set(status.versions) | set(counts.customer_deks) | set(counts.service_keys)):
        table.add_row(
            f"v{version}", str(counts.customer_deks.get(version, 0)), str(counts.service_keys.get(version, 0))
        )
    Console().print(table)


@app.command("rotate")
def keys_rotate() -> None:
    """Create a new KEK version and rewrap every wrapped key onto it, online. Resume with `keys rewrap`."""
    with _key_rotation("keys rotate") as keys:
        _run_rewrap(keys.rotate(), "rotating")


@app.command("rewrap")
def keys_rewrap() -> None:
    """Rewrap every wrapped key below the latest KEK version (resumes an interrupted rotation)."""
    with _key_rotation("keys rewrap") as keys:
        _run_rewrap(keys.rewrap(), "rewrapping")


@app.command("min-version")
def keys_min_version(version: Annotated[int, typer.Argument(help="Retire KEK versions below this one.")]) -> None:
    """Raise the minimum decryption version; refused while any wrapped key still uses an older one."""
    from vault.keys.provider import MinimumVersionRefused

    with _key_rotation("keys min-version") as keys:
        try:
            keys.raise_min_decryption_version(version)
        except MinimumVersionRefused as refused:
            fail(str(refused))
    err.print(f"minimum decryption version is now {version}")


def _run_rewrap(steps: Iterator[RewrapProgress], label: str) -> None:
    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[note]}"), console=err) as bar:
        task = bar.add_task(label, total=None, note="")
        for step in steps:
            bar.update(
                task,
                total=max(step.total, 1),
                completed=step.rewrapped + step.skipped,
                note=f"v{step.target_version}, {step.skipped} skipped",
            )
    err.print(f"done: {step.rewrapped} rewrapped onto v{step.target_version}, {step.skipped} skipped")


@contextmanager
def _key_rotation(action: str) -> Iterator[KeyRotation]:
    from vault.keys.provider import ProviderUnavailable

    with opened_vault(action, "admin") as vault:
        try:
            yield vault.keys
        except ProviderUnavailable:
            fail("the key provider is unavailable; nothing was changed by the failed step")
