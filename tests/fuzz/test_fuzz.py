"""The fuzz target in ``make test``: it reaches every served RPC, its oracle fails on what it must, and a short
campaign on each target (in process and over gRPC) runs exactly the inputs asked for with no failure.

The soak runs the same target for a million inputs: ``python -m tests.fuzz.soak`` (``make soak``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog

from piivault.v1 import customers_pb2 as pb
from tests.fuzz import soak
from tests.fuzz.harness import FuzzFailure, World
from tests.fuzz.messages import discover
from vault.api.customers import CustomerServicer
from vault.api.server import SERVICE_NAMES
from vault.auth.policy import ALLOWED_ROLES
from vault.errors import InvalidArgument

SHORT = {"direct": 2_000, "grpc": 1_000}


def test_the_target_reaches_every_method_the_server_serves() -> None:
    rpcs = discover()
    assert {rpc.service for rpc in rpcs} == set(SERVICE_NAMES)
    assert len(rpcs) >= 33
    # Each method is fuzzed with a role allowed to call it; a method no role may call would only ever be refused.
    assert [rpc.path for rpc in rpcs if not ALLOWED_ROLES.get(rpc.path)] == []


@pytest.fixture
def broken_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A world whose servicer misbehaves in the three ways the oracle must catch (patched before it is wired)."""

    def crash(self: CustomerServicer, request: pb.GetCustomerRequest, context: grpc.ServicerContext) -> None:
        raise RuntimeError("a bug")

    def echo(self: CustomerServicer, request: pb.FindCustomersRequest, context: grpc.ServicerContext) -> None:
        raise InvalidArgument.single("mobile", f"{request.mobile} is not a mobile number")

    def log(self: CustomerServicer, request: pb.ListCustomersRequest, context: grpc.ServicerContext) -> None:
        structlog.get_logger("piivault.test").info("listing", customer_id=request.page_token)
        raise InvalidArgument.single("page_token", "is not a token this server issued")

    monkeypatch.setattr(CustomerServicer, "GetCustomer", crash)
    monkeypatch.setattr(CustomerServicer, "FindCustomers", echo)
    monkeypatch.setattr(CustomerServicer, "ListCustomers", log)
    world = World(tmp_path, "direct")
    yield world
    world.close()


def test_the_oracle_fails_an_internal_error_an_echoed_value_and_a_logged_value(broken_world: World) -> None:
    rpcs = broken_world.by_name
    token = broken_world.tokens["service"]
    # Not synthetic people's values: what this test makes the server echo must not trip the session's canary scan.
    echoed, logged = "echo-7Qz+13X", "logged-9Wq+42Y"

    def verdict(name: str, request: pb.GetCustomerRequest | pb.FindCustomersRequest | pb.ListCustomersRequest) -> str:
        outcome = broken_world.caller.call(rpcs[name], [request.SerializeToString()], token)
        with pytest.raises(FuzzFailure) as failed:
            broken_world.check(rpcs[name], "seed", outcome, [echoed, logged])
        return str(failed.value)

    get = pb.GetCustomerRequest(customer_id=broken_world.pool.customer_ids[0], purpose="customer_service")
    assert verdict("GetCustomer", get).endswith("answered INTERNAL")
    find = pb.FindCustomersRequest(mobile=echoed, purpose="customer_service")
    assert verdict("FindCustomers", find).endswith("came back in the INVALID_ARGUMENT status")
    listing = pb.ListCustomersRequest(page_token=logged, purpose="customer_service")
    assert verdict("ListCustomers", listing).endswith("was written to a log line")


def test_the_oracle_passes_a_refusal_that_names_only_the_field(tmp_path: Path) -> None:
    world = World(tmp_path, "direct")
    try:
        rpc = world.by_name["FindCustomers"]
        request = pb.FindCustomersRequest(mobile="1390000\u202e0042", purpose="customer_service")
        outcome = world.caller.call(rpc, [request.SerializeToString()], world.tokens["service"])
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
        world.check(rpc, "hostile", outcome, ["1390000\u202e0042"])  # raises on an echo
    finally:
        world.close()


@pytest.mark.slow
def test_a_short_campaign_on_each_target_runs_every_input_and_finds_nothing(tmp_path: Path) -> None:
    results = soak.run(SHORT, tmp_path, timeout=600)
    for result in results:
        tail = result.log.read_text(errors="replace")[-3000:]
        assert result.ok, soak.describe(result) + "\n" + tail
    assert sorted((r.via, r.executions) for r in results) == sorted(SHORT.items())
