"""Vault stops mid-run: calls fail fast with UNAVAILABLE, nothing is half written, and the service recovers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from sqlalchemy import func, select

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People, caller, dpo, profile_of
from tests.transit_server import TransitServer
from vault.api.server import start_server
from vault.app import Vault
from vault.config import Settings
from vault.errors import Unavailable
from vault.keys.vault_transit import VaultTransitKeyProvider
from vault.storage.db import Database
from vault.storage.models import BlindIndexRow, CustomerRow


@pytest.fixture
def transit() -> Iterator[TransitServer]:
    with TransitServer() as server:
        yield server


@pytest.fixture
def vault_on_transit(settings: Settings, database: Database, transit: TransitServer) -> Iterator[Vault]:
    provider = VaultTransitKeyProvider.connect(transit.url, token=transit.root_token)
    opened = Vault.open(settings, database=database, provider=provider)
    yield opened
    opened.close()
    provider.close()


def _rows(vault: Vault) -> tuple[int, int]:
    with vault.database.read() as connection:
        customers = connection.execute(select(func.count()).select_from(CustomerRow)).scalar_one()
        indexes = connection.execute(select(func.count()).select_from(BlindIndexRow)).scalar_one()
    return int(customers), int(indexes)


@pytest.mark.parametrize("outage", ["down", "sealed", "hanging"])
def test_outage_fails_fast_writes_nothing_and_recovers(
    vault_on_transit: Vault, transit: TransitServer, people: People, outage: str
) -> None:
    vault = vault_on_transit
    existing = vault.customers.create(caller("pos"), "", profile_of(people.next()))
    before = _rows(vault)
    vault.data_keys.drain_pool()  # the next create needs Vault to wrap its DEK
    vault.data_keys.forget(existing.customer_id)  # the next read needs Vault to unwrap
    if outage == "down":
        transit.set_down(True)
    elif outage == "sealed":
        transit.seal()
    else:
        transit.set_latency(5)
    attempts: list[Callable[[], object]] = [
        lambda: vault.customers.create(caller("pos"), "r-outage", profile_of(people.next())),
        lambda: vault.customers.get(caller(), existing.customer_id),
    ]
    try:
        for attempt in attempts:
            started = time.monotonic()
            with pytest.raises(Unavailable):
                attempt()
            assert time.monotonic() - started < 2.0
        assert _rows(vault) == before
    finally:
        transit.set_down(False)
        transit.unseal()
        transit.set_latency(0)
    assert vault.customers.get(dpo(), existing.customer_id) == existing
    vault.customers.create(caller("pos"), "r-after", profile_of(people.next()))
    assert _rows(vault)[0] == before[0] + 1


def test_outage_over_grpc_is_unavailable(vault_on_transit: Vault, transit: TransitServer, people: People) -> None:
    running = start_server(vault_on_transit, "127.0.0.1:0")
    token = vault_on_transit.tokens.create("pos", "service").secret
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.CustomerServiceStub(channel)
            vault_on_transit.data_keys.drain_pool()
            transit.set_down(True)
            person = people.next()
            request = pb.CreateCustomerRequest(customer=pb.Customer(name=person.name, mobile=person.mobile))
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateCustomer(request, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2.0
            transit.set_down(False)
            assert stub.CreateCustomer(request, metadata=metadata).customer.mobile == "+86" + person.mobile
    finally:
        transit.set_down(False)
        running.stop(grace=1)
