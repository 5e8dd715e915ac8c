"""``piivault``: serve and migrate here; tokens, keys, audit and purposes in their own modules.

Server-side commands import the ``vault`` package only when run, so the client side of this package stays usable
without the server installed.
"""

from __future__ import annotations

import typer

from piivault.cli import analytics, audit, certs, doctor, dsar, imports, keys, ledger, purposes, retention, tokens
from piivault.cli.common import err, fail

# No pretty tracebacks: typer's show the local variables of every frame, and in a PII service those hold personal data.
app = typer.Typer(
    help=(
        "piivault: privacy-compliance data vault for retail customer records. Commands that go through the API take "
        "--address (or PIIVAULT_ADDRESS) and PIIVAULT_TOKEN; token, cert, migrate, serve, doctor, retention, "
        "replay-ledger and purposes always run in-process on the configured database."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _logging() -> None:
    """Every command logs JSON lines to stderr, redacted like the server's, so that stdout holds only the command's
    output (``piivault token create > pos.token`` must capture the token and nothing else)."""
    import os

    try:
        from vault import logs
    except ImportError:  # the client side without the server package: nothing of the server's to log
        return
    logs.configure(os.environ.get("PIIVAULT_LOG_LEVEL") or "warning")


app.add_typer(tokens.app, name="token")
app.add_typer(certs.app, name="cert")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(dsar.app, name="dsar")
app.add_typer(retention.app, name="retention")
app.add_typer(analytics.app, name="analytics")
app.add_typer(imports.app, name="import")
app.command(name="purposes")(purposes.show)
app.command(name="doctor")(doctor.doctor)
app.command(name="replay-ledger")(ledger.replay_ledger)


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
        fail(str(error))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the current version."""
    from vault.config import ConfigError, Settings
    from vault.storage.db import make_engine
    from vault.storage.migrate import current_revision, upgrade

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        fail(str(error))
    if settings.effective_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    err.print(f"schema at revision {current_revision(engine)}")
    engine.dispose()


if __name__ == "__main__":
    app()
