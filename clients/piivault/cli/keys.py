"""``piivault keys``: the key-encryption key — status, online rotation with a progress bar, retiring versions.

Every command runs in-process as the local operator, or with ``--address`` (or PIIVAULT_ADDRESS) through KeyService
with PIIVAULT_TOKEN (role ``admin``), printing the same thing either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn
from rich.table import Table

from piivault.cli.common import err, fail, opened_vault
from piivault.cli.remote import Address, api_client

if TYPE_CHECKING:
    from piivault.v1 import keys_pb2
    from vault.keys.rotation import KeyRotation, RewrapProgress

app = typer.Typer(
    help="Key-encryption key: status, rotation, retiring old versions. In-process as the local operator, or with "
    "--address through KeyService (an admin token).",
    no_args_is_help=True,
)


class Step(NamedTuple):
    """Progress of a rewrap pass after one batch, from the domain (in-process) or a KeyService stream message."""

    target_version: int
    rewrapped: int
    total: int
    skipped: int


@app.command("status")
def keys_status(address: Address = "") -> None:
    """Show KEK versions and how many wrapped keys sit on each."""
    if address:
        with api_client(address) as client:
            reply = client.keys.status()
        provider, key_name = reply.provider, reply.key_name
        latest, minimum, versions = reply.latest_version, reply.min_decryption_version, list(reply.versions)
        customer_deks = {c.kek_version: c.customer_deks for c in reply.counts}
        service_keys = {c.kek_version: c.service_keys for c in reply.counts}
    else:
        with _key_rotation("keys status") as keys:
            status, counts = keys.status()
        provider, key_name = status.provider, status.key_name
        latest, minimum, versions = status.latest_version, status.min_decryption_version, list(status.versions)
        customer_deks, service_keys = dict(counts.customer_deks), dict(counts.service_keys)
    Console().print(f"provider [bold]{provider}[/bold] key {key_name}: latest v{latest}, minimum decryption v{minimum}")
    table = Table("KEK version", "customer DEKs", "service keys")
    for version in sorted(set(versions) | set(customer_deks) | set(service_keys)):
        table.add_row(f"v{version}", str(customer_deks.get(version, 0)), str(service_keys.get(version, 0)))
    Console().print(table)


@app.command("rotate")
def keys_rotate(address: Address = "") -> None:
    """Create a new KEK version and rewrap every wrapped key onto it, online. Resume with `keys rewrap`."""
    if address:
        with api_client(address) as client, client.keys.rotate_kek() as stream:
            _run_rewrap(_api_steps((m.new_version, m.progress) for m in stream), "rotating")
        return
    with _key_rotation("keys rotate") as keys:
        _run_rewrap(_domain_steps(keys.rotate()), "rotating")


@app.command("rewrap")
def keys_rewrap(address: Address = "") -> None:
    """Rewrap every wrapped key below the latest KEK version (resumes an interrupted rotation)."""
    if address:
        with api_client(address) as client, client.keys.rewrap_keys() as stream:
            _run_rewrap(_api_steps((m.target_version, m.progress) for m in stream), "rewrapping")
        return
    with _key_rotation("keys rewrap") as keys:
        _run_rewrap(_domain_steps(keys.rewrap()), "rewrapping")


@app.command("min-version")
def keys_min_version(
    version: Annotated[int, typer.Argument(help="Retire KEK versions below this one.")], address: Address = ""
) -> None:
    """Raise the minimum decryption version; refused while any wrapped key still uses an older one."""
    if address:
        with api_client(address) as client:
            version = client.keys.set_min_decryption_version(version).min_decryption_version
    else:
        from vault.keys.provider import MinimumVersionRefused

        with _key_rotation("keys min-version") as keys:
            try:
                keys.raise_min_decryption_version(version)
            except MinimumVersionRefused as refused:
                fail(str(refused))
    err.print(f"minimum decryption version is now {version}")


def _api_steps(messages: Iterable[tuple[int, keys_pb2.RewrapProgress]]) -> Iterator[Step]:
    """Steps from the streamed (target version, progress) of RotateKek or RewrapKeys."""
    for version, progress in messages:
        yield Step(version, progress.rewrapped, progress.total, progress.skipped)


def _domain_steps(steps: Iterable[RewrapProgress]) -> Iterator[Step]:
    return (Step(s.target_version, s.rewrapped, s.total, s.skipped) for s in steps)


def _run_rewrap(steps: Iterable[Step], label: str) -> None:
    remaining = iter(steps)
    # The first batch before the bar: a refused call (a role, the provider) ends the command with its one line.
    first = next(remaining, None)
    if first is None:
        fail("the vault reported no progress; run `piivault keys status` to see where the keys stand")
    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[note]}"), console=err) as bar:
        task = bar.add_task(label, total=None, note="")
        last = first
        for last in itertools.chain([first], remaining):
            bar.update(
                task,
                total=max(last.total, 1),
                completed=last.rewrapped + last.skipped,
                note=f"v{last.target_version}, {last.skipped} skipped",
            )
    err.print(f"done: {last.rewrapped} rewrapped onto v{last.target_version}, {last.skipped} skipped")


@contextmanager
def _key_rotation(action: str) -> Iterator[KeyRotation]:
    from vault.keys.provider import ProviderUnavailable

    with opened_vault(action, "admin") as vault:
        try:
            yield vault.keys
        except ProviderUnavailable:
            fail("the key provider is unavailable; nothing was changed by the failed step")
