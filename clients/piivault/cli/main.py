"""``piivault``: serve, migrate, and manage API tokens.

Server-side commands (serve, migrate, token) import the ``vault`` package only when run, so the client side of this
package stays usable without the server installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn
from rich.table import Table

if TYPE_CHECKING:
    from vault.auth.tokens import TokenService
    from vault.keys.rotation import KeyRotation, RewrapProgress

app = typer.Typer(help="piivault: privacy-compliance data vault for retail customer records.", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
keys_app = typer.Typer(help="Key-encryption key: status, rotation, retiring old versions.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
_err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command()
def serve() -> None:
    """Start the gRPC server (PIIVAULT_LISTEN, default 127.0.0.1:50051)."""
    from vault import logs
    from vault.api.server import serve as run
    from vault.config import ConfigError, Settings
    from vault.keys.local import KeyringError
    from vault.storage.migrate import SchemaError

    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level)
        run(settings)
    except (ConfigError, KeyringError, SchemaError) as error:
        _fail(str(error))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the current version."""
    from vault.config import ConfigError, Settings
    from vault.storage.db import make_engine
    from vault.storage.migrate import current_revision, upgrade

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        _fail(str(error))
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    _err.print(f"schema at revision {current_revision(engine)}")
    engine.dispose()


@token_app.command("create")
def token_create(
    principal: Annotated[str, typer.Option(help="Who uses the token, e.g. pos-shanghai.")],
    role: Annotated[str, typer.Option(help="service, support, marketing, analyst, dpo, auditor or admin.")],
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from vault.errors import InvalidArgument

    tokens = _token_service()
    try:
        issued = tokens.create(principal, role)
    except InvalidArgument as error:
        _fail("; ".join(f"{v.field} {v.rule}" for v in error.violations))
    _err.print(f"token {issued.token_id} for {issued.principal} ({issued.role}); it is shown only this once:")
    sys.stdout.write(issued.secret + "\n")


@token_app.command("list")
def token_list() -> None:
    """List tokens (ids, principals, roles; never the secrets)."""
    table = Table("token_id", "principal", "role", "created", "revoked")
    for info in _token_service().list():
        table.add_row(
            info.token_id,
            info.principal,
            info.role,
            info.create_time.isoformat(timespec="seconds"),
            info.revoke_time.isoformat(timespec="seconds") if info.revoke_time else "",
        )
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token_id shown by `token list`.")]) -> None:
    """Revoke a token; it stops working within the token cache TTL (5 s by default)."""
    from vault.errors import NotFound

    try:
        _token_service().revoke(token_id)
    except NotFound as error:
        _fail(str(error))
    _err.print(f"revoked {token_id}")


@keys_app.command("status")
def keys_status() -> None:
    """Show KEK versions and how many wrapped keys sit on each."""
    with _key_rotation() as keys:
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


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Create a new KEK version and rewrap every wrapped key onto it, online. Resume with `keys rewrap`."""
    with _key_rotation() as keys:
        _run_rewrap(keys.rotate(), "rotating")


@keys_app.command("rewrap")
def keys_rewrap() -> None:
    """Rewrap every wrapped key below the latest KEK version (resumes an interrupted rotation)."""
    with _key_rotation() as keys:
        _run_rewrap(keys.rewrap(), "rewrapping")


@keys_app.command("min-version")
def keys_min_version(version: Annotated[int, typer.Argument(help="Retire KEK versions below this one.")]) -> None:
    """Raise the minimum decryption version; refused while any wrapped key still uses an older one."""
    from vault.keys.provider import MinimumVersionRefused

    with _key_rotation() as keys:
        try:
            keys.raise_min_decryption_version(version)
        except MinimumVersionRefused as refused:
            _fail(str(refused))
    _err.print(f"minimum decryption version is now {version}")


def _run_rewrap(steps: Iterator[RewrapProgress], label: str) -> None:
    with Progress(*Progress.get_default_columns(), TextColumn("{task.fields[note]}"), console=_err) as bar:
        task = bar.add_task(label, total=None, note="")
        for step in steps:
            bar.update(
                task,
                total=max(step.total, 1),
                completed=step.rewrapped + step.skipped,
                note=f"v{step.target_version}, {step.skipped} skipped",
            )
    _err.print(f"done: {step.rewrapped} rewrapped onto v{step.target_version}, {step.skipped} skipped")


@contextmanager
def _key_rotation() -> Iterator[KeyRotation]:
    from vault.app import Vault
    from vault.config import ConfigError, Settings
    from vault.keys.local import KeyringError
    from vault.keys.provider import ProviderConfigError, ProviderUnavailable
    from vault.storage.migrate import SchemaError

    try:
        vault = Vault.open(Settings.from_env())
    except (ConfigError, KeyringError, SchemaError, ProviderConfigError) as error:
        _fail(str(error))
    try:
        yield vault.keys
    except ProviderUnavailable:
        _fail("the key provider is unavailable; nothing was changed by the failed step")
    finally:
        vault.close()


def _token_service() -> TokenService:
    from vault.auth.tokens import TokenService
    from vault.config import ConfigError, Settings
    from vault.storage.db import Database
    from vault.storage.migrate import SchemaError, require_current_schema

    try:
        settings = Settings.from_env()
        database = Database.from_url(settings.effective_database_url)
        require_current_schema(database.engine)
    except (ConfigError, SchemaError) as error:
        _fail(str(error))
    return TokenService(database)


if __name__ == "__main__":
    app()
