"""e2e fixtures: the SDK (``piivault.client.PiiVault``) against the in-process server of ``tests/conftest.py``.

The e2e tests drive the services through the SDK only. Their clients send every call once (retries disabled), so an
UNAVAILABLE or a deadline the server gives is seen by the test instead of being absorbed by a retry; the retries
themselves are tested in ``test_sdk.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from piivault.client import PiiVault, RetryPolicy
from tests.support.flaky_proxy import FlakyProxy
from vault.api.server import RunningServer
from vault.app import Vault
from vault.auth.tokens import IssuedToken

Connect = Callable[..., PiiVault]


@pytest.fixture
def address(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def connect(address: str) -> Iterator[Connect]:
    """``connect(token)`` → a client of the test server (closed after the test); keyword arguments go to PiiVault."""
    opened: list[PiiVault] = []

    def open_client(token: str | None, **options: Any) -> PiiVault:
        options.setdefault("retry", RetryPolicy.disabled())
        client = PiiVault(options.pop("address", address), token, **options)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def proxy(address: str) -> Iterator[FlakyProxy]:
    """A proxy in front of the test server that fails chosen calls like a network would (held calls wait 3 s)."""
    with FlakyProxy(address, delay=3.0) as running:
        yield running


@pytest.fixture
def client(connect: Connect, service_token: IssuedToken) -> PiiVault:
    """A client with a `service` token (an integrating system such as a POS)."""
    return connect(service_token.secret)


@pytest.fixture
def as_role(vault: Vault, client: PiiVault) -> Callable[[str, str], PiiVault]:
    """``as_role(principal, role)`` → a client on the same channel with a new token for that principal and role."""

    def token_for(principal: str, role: str) -> PiiVault:
        return client.with_token(vault.tokens.create(principal, role).secret)

    return token_for
