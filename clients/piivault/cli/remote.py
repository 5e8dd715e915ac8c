"""Commands that can run against a running vault through its API, with the SDK, instead of opening the database.

Given ``--address`` (or ``PIIVAULT_ADDRESS``) such a command connects there with ``PIIVAULT_TOKEN`` (TLS files from
``PIIVAULT_CA_FILE``, ``PIIVAULT_CLIENT_CERT_FILE``, ``PIIVAULT_CLIENT_KEY_FILE``) and the vault audits the call under
the token's principal. Without an address the command opens the vault in-process, as the operator on the server host.
Commands with no RPC behind them, and the operator's commands on the database or the configuration (token, cert,
migrate, serve, doctor, retention, replay-ledger, purposes), always run in-process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from piivault.cli.common import err, fail

if TYPE_CHECKING:
    from piivault.client import PiiVault, PiiVaultError

ADDRESS_HELP = (
    "Run against this vault's API (host:port; also PIIVAULT_ADDRESS) with PIIVAULT_TOKEN, instead of opening "
    "the database in-process."
)
Address = Annotated[str, typer.Option("--address", envvar="PIIVAULT_ADDRESS", help=ADDRESS_HELP)]
Item = TypeVar("Item")
Answer = TypeVar("Answer")
MAX_WAIT = 60.0  # seconds a paced call waits at most for the lookup budget to refill
# Refusals in a row before giving up: the wait doubles with each, so by then it is past any budget's refill interval and
# the budget is being spent by another client of the same principal.
MAX_REFUSALS = 12


@contextmanager
def api_client(address: str, **options: Any) -> Iterator[PiiVault]:
    """A client of the vault at ``address`` (``options`` go to ``PiiVault``); an error of a call made in the block
    ends the command with one value-free line on stderr and exit code 2."""
    from piivault.client import PiiVault, PiiVaultError, is_loopback

    env = {**os.environ, "PIIVAULT_ADDRESS": address}
    if not (is_loopback(address) or env.get("PIIVAULT_CA_FILE") or env.get("PIIVAULT_CLIENT_CERT_FILE")):
        fail(
            "a plaintext connection is for loopback addresses only: set PIIVAULT_CA_FILE (and "
            "PIIVAULT_CLIENT_CERT_FILE and PIIVAULT_CLIENT_KEY_FILE for mTLS) to reach the vault over TLS"
        )
    try:
        client = PiiVault.from_env(env, **options)
    except (ValueError, OSError) as error:
        fail(str(error))
    try:
        with client:
            yield client
    except PiiVaultError as error:
        fail(describe(error))


def describe(error: PiiVaultError) -> str:
    """The status, the vault's fixed sentence and, for a rejected request, each field with its rule — on one line.
    None of it comes from the request, so no value is ever echoed."""
    return " ".join(str(error).split())


class Pacer:
    """Sends calls that spend one lookup of the token's budget per item, slowing down to the budget's refill.

    For calls that a refusal leaves unwritten, so that sending a refused call again whole is right: FindCustomers, and
    ImportCustomers of at most ``vault.imports.service.BATCH`` rows (the vault charges all their lookups first).

    The budget is a token bucket: a burst, then a steady refill whose rate the client is not told. Calls go out as they
    come until the vault refuses one (RESOURCE_EXHAUSTED). From then on every call first waits ``interval`` seconds for
    each of its lookups (in parts of at most ``MAX_WAIT`` seconds' worth), so that the bucket, which a refused call
    leaves empty, holds enough for it. The interval is learnt: each refusal doubles it (to at least half again the
    refusal's RetryInfo hint, which tells only when the next single lookup is back), and each call that gets through
    shortens it by ``SHORTEN``, so it settles around the real refill interval with a refusal now and then.
    """

    SHORTEN = 0.95

    def __init__(self, waiting: Callable[[], None] = lambda: None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._waiting = waiting  # called before each wait (the progress bar says so)
        self._sleep = sleep
        self.interval = 0.0  # seconds per lookup; 0 until the vault first refuses a call

    def send(self, items: list[Item], call: Callable[[list[Item]], Answer]) -> Iterator[tuple[list[Item], Answer]]:
        """``call`` on consecutive parts of ``items``, yielding each part with its answer."""
        from piivault.client import ResourceExhausted

        start, refusals = 0, 0
        while start < len(items):
            part = items[start : start + (max(1, int(MAX_WAIT / self.interval)) if self.interval else len(items))]
            if self.interval:
                self._waiting()
                self._sleep(len(part) * self.interval)
            try:
                answer = call(part)
            except ResourceExhausted as refused:
                refusals += 1
                if refusals > MAX_REFUSALS:
                    raise
                if not self.interval:
                    self._tell()
                self.interval = max(2 * self.interval, 1.5 * (refused.retry_after or 1.0), 0.01)
                continue
            refusals = 0
            self.interval *= self.SHORTEN
            start += len(part)
            yield part, answer

    def _tell(self) -> None:
        err.print(
            "the token's lookup budget is spent: pacing the import to its refill (over the API every customer row, "
            "and every customer a purchase names by identifier, is a lookup)",
            soft_wrap=True,
        )


def in_process_only(address: str, command: str, why: str) -> None:
    """Refuse ``--address`` for a command that has no RPC behind it."""
    if address:
        fail(
            f"`piivault {command}` runs in-process only ({why}): run it on the vault's host without --address "
            "and with PIIVAULT_ADDRESS unset"
        )
