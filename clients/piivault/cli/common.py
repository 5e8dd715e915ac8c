"""What the command modules share: error output, the local operator's identity, an opened vault."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from vault.app import Vault

err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One line on stderr (never wrapped, never read as markup) and exit code 2."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def operator() -> str:
    """Who runs a server-side command: the local OS user, as recorded in the audit log."""
    try:
        return "local:" + getpass.getuser()
    except (KeyError, OSError):
        return "local:unknown"


def _open_recorded(action: str, role: str) -> Vault:
    """The vault from the environment's settings, with the command recorded in the audit log."""
    from audit.events import AuditDraft, Caller
    from vault.app import Vault
    from vault.config import ConfigError, Settings
    from vault.keys.local import KeyringError
    from vault.keys.provider import ProviderConfigError
    from vault.storage.migrate import SchemaError

    try:
        vault = Vault.open(Settings.from_env())
    except (ConfigError, KeyringError, SchemaError, ProviderConfigError) as error:
        fail(str(error))
    try:
        vault.audit.record(AuditDraft.of(Caller(operator(), role, f"cli:{action}"), "ok"))
    except BaseException:
        vault.close()
        raise
    return vault


@contextmanager
def opened_vault(action: str, role: str) -> Iterator[Vault]:
    """The vault from the environment's settings, with the command recorded in the audit log first."""
    vault = _open_recorded(action, role)
    try:
        yield vault
    finally:
        vault.close()


def record_command(action: str, role: str) -> None:
    """Record the command in the audit log, for a command whose work runs in processes of its own (the vault is
    closed again before this returns)."""
    _open_recorded(action, role).close()
