"""Commands that can run against a running vault through its API, with the SDK, instead of opening the database.

Given ``--address`` (or ``PIIVAULT_ADDRESS``) such a command connects there with ``PIIVAULT_TOKEN`` (TLS files from
``PIIVAULT_CA_FILE``, ``PIIVAULT_CLIENT_CERT_FILE``, ``PIIVAULT_CLIENT_KEY_FILE``) and the vault audits the call under
the token's principal. Without an address the command opens the vault in-process, as the operator on the server host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from piivault.cli.common import fail

if TYPE_CHECKING:
    from piivault.client import PiiVault

ADDRESS_HELP = (
    "Run against this vault's API (host:port; also PIIVAULT_ADDRESS) with PIIVAULT_TOKEN, instead of opening "
    "the database in-process."
)


@contextmanager
def api_client(address: str) -> Iterator[PiiVault]:
    """A client of the vault at ``address``; an error of the call ends the command with its (value-free) message."""
    from piivault.client import PiiVault, PiiVaultError

    try:
        client = PiiVault.from_env({**os.environ, "PIIVAULT_ADDRESS": address})
    except (ValueError, OSError) as error:
        fail(str(error))
    try:
        with client:
            yield client
    except PiiVaultError as error:
        fail(str(error))
