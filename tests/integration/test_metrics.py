"""Metrics in one server process: exact counts per method and status code, Vault calls, the DEK cache, group commits
and import rows — and no customer id, request id or personal value in any label."""

from __future__ import annotations

import secrets
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.metrics import RPC_REQUESTS, Scrape, delta, scrape
from tests.support.people import People, Person, caller, customer_message
from tests.support.scan import find_in_bytes, needles
from tests.support.server import free_port
from tests.transit_server import TransitServer
from vault.api.server import RunningServer
from vault.app import Vault
from vault.config import Settings
from vault.crypto import CryptoError, SecretKey
from vault.customers.models import Profile
from vault.keys.dek_cache import DekCache
from vault.keys.provider import ProviderUnavailable, WrappedKey
from vault.keys.vault_transit import VaultTransitKeyProvider
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter

pytestmark = pytest.mark.local_keyring

SERVICE = "piivault.v1.CustomerService"
CREATE, GET, FIND = (f"/{SERVICE}/{name}" for name in ("CreateCustomer", "GetCustomer", "FindCustomers"))
PURPOSE = "customer_service"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        key_settle_seconds=0,
        analytics_settle_seconds=0,
        metrics_listen=f"127.0.0.1:{free_port()}",
    )


@pytest.fixture
def metrics_url(server: RunningServer) -> str:
    assert server.metrics is not None
    return f"http://127.0.0.1:{server.metrics.port}/metrics"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _forbidden_in_labels(after: Scrape, people: list[Person], secrets_: list[str]) -> list[str]:
    """Label values that hold a customer id, a request id or a person's personal data."""
    values = [needle.decode() for label, needle in needles(people).items() if "/utf-8:" in label]
    forbidden = values + secrets_
    return [value for value in after.label_values() if any(f in value for f in forbidden)]


def test_every_call_is_counted_by_method_and_code_and_no_label_holds_pii(
    server: RunningServer,
    channel: grpc.Channel,
    stub: pb_grpc.CustomerServiceStub,
    auth: tuple[tuple[str, str], ...],
    people: People,
    metrics_url: str,
) -> None:
    before = scrape(metrics_url)
    persons = people.many(4)
    request_ids = [f"req-{uuid.uuid4().hex}" for _ in range(6)]
    ids: list[str] = []
    for person, request_id in zip(persons, request_ids, strict=False):
        reply = stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=customer_message(person), request_id=request_id),
            metadata=(*auth, ("x-request-id", request_id)),
        )
        ids.append(reply.customer.customer_id)
    for customer_id in ids * 2:
        stub.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id, purpose=PURPOSE), metadata=auth)
    for person in persons[:3]:
        stub.FindCustomers(pb.FindCustomersRequest(mobile=person.mobile, purpose=PURPOSE), metadata=auth)
    invalid = people.many(3)
    for person in invalid:  # a national id with a wrong check digit
        customer = customer_message(person)
        customer.national_id = person.national_id[:17] + ("0" if person.national_id[17] != "0" else "1")
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer), metadata=auth)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(persons[0])), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCustomer(pb.GetCustomerRequest(customer_id=ids[0], purpose=PURPOSE))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A method the server does not have, named by a mobile number: the name must not become a label.
    unknown = channel.unary_unary(
        f"/{SERVICE}/{persons[1].mobile}", request_serializer=bytes, response_deserializer=bytes
    )
    with pytest.raises(grpc.RpcError) as caught:
        unknown(b"", metadata=auth)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    after = scrape(metrics_url)
    assert delta(before.rpc_counts(), after.rpc_counts()) == {
        (CREATE, "OK"): 4,
        (CREATE, "INVALID_ARGUMENT"): 3,
        (CREATE, "ALREADY_EXISTS"): 1,
        (GET, "OK"): 8,
        (GET, "UNAUTHENTICATED"): 2,
        (FIND, "OK"): 3,
    }
    assert (
        after.value(RPC_REQUESTS, method="unknown", code="UNIMPLEMENTED")
        - before.value(RPC_REQUESTS, method="unknown", code="UNIMPLEMENTED")
        == 1
    )
    assert after.value(RPC_REQUESTS, service=SERVICE, method=GET) == after.value(
        "piivault_rpc_duration_seconds_count", service=SERVICE, method=GET
    )
    assert after.value("piivault_group_commit_size_count") > before.value("piivault_group_commit_size_count")
    assert after.value("piivault_dek_cache_lookups_total", result="hit") > before.value(
        "piivault_dek_cache_lookups_total", result="hit"
    )
    assert _forbidden_in_labels(after, persons + invalid, ids + request_ids) == []
    assert find_in_bytes(after.text.encode(), needles(persons + invalid)) == []
    assert [customer_id for customer_id in ids if customer_id in after.text] == []


def test_vault_transit_calls_are_counted_by_operation_and_outcome(transit_server: TransitServer) -> None:
    provider = VaultTransitKeyProvider.connect(
        transit_server.url, token=transit_server.root_token, key_name="piivault-kek-" + secrets.token_hex(4)
    )
    labels = [("encrypt", "ok"), ("decrypt", "ok"), ("decrypt", "rejected"), ("encrypt", "unavailable")]
    before = {
        pair: _sample("piivault_vault_transit_calls_total", operation=pair[0], outcome=pair[1]) for pair in labels
    }
    timed = _sample("piivault_vault_transit_call_duration_seconds_count", operation="decrypt")
    try:
        wrapped = provider.wrap([SecretKey.generate() for _ in range(3)])  # one batched call
        assert len(provider.unwrap(wrapped)) == 3
        tampered = WrappedKey(wrapped[0].blob[:-8] + "AAAAAAA=", wrapped[0].kek_version)
        with pytest.raises(CryptoError):
            provider.unwrap([tampered])
    finally:
        provider.close()
    unreachable = VaultTransitKeyProvider(f"http://127.0.0.1:{free_port()}", token="unused", retries=0)
    with pytest.raises(ProviderUnavailable):
        unreachable.wrap([SecretKey.generate()])
    unreachable.close()
    after = {pair: _sample("piivault_vault_transit_calls_total", operation=pair[0], outcome=pair[1]) for pair in labels}
    assert {pair: after[pair] - before[pair] for pair in labels} == dict.fromkeys(labels, 1.0)
    assert _sample("piivault_vault_transit_call_duration_seconds_count", operation="decrypt") - timed == 2


def test_dek_cache_lookups_are_counted_as_hits_and_misses() -> None:
    cache = DekCache(10, 60.0)
    hits, misses = (_sample("piivault_dek_cache_lookups_total", result=r) for r in ("hit", "miss"))
    assert cache.get("c1", "blob") is None
    cache.put("c1", "blob", SecretKey.generate())
    for _ in range(3):
        assert cache.get("c1", "blob") is not None
    assert _sample("piivault_dek_cache_lookups_total", result="hit") - hits == 3
    assert _sample("piivault_dek_cache_lookups_total", result="miss") - misses == 1


def test_group_commit_sizes_are_observed(database: Database) -> None:
    committer = GroupCommitter(database)
    count, total = _sample("piivault_group_commit_size_count"), _sample("piivault_group_commit_size_sum")
    start = threading.Barrier(16)

    def submit() -> None:
        start.wait()
        committer.submit(None)

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert committer.jobs == 16
    assert _sample("piivault_group_commit_size_count") - count == committer.batches
    assert _sample("piivault_group_commit_size_sum") - total == 16


def test_import_rows_are_counted_by_kind_and_outcome(vault: Vault, people: People) -> None:
    first, second, third = people.many(3)
    vault.customers.create(caller(), "", Profile(name=first.name, mobile=first.mobile))
    rows = [
        (2, {"name": second.name, "mobile": second.mobile}),
        (3, {"name": third.name, "mobile": third.mobile}),
        (4, {"mobile": first.mobile, "email": first.email}),  # fills the email of an existing customer
        (5, {"mobile": first.mobile}),  # nothing new
        (6, {"name": "x", "mobile": "12"}),
    ]
    outcomes = ("created", "merged", "unchanged", "rejected")
    before = {o: _sample("piivault_import_rows_total", kind="customers", outcome=o) for o in outcomes}
    summary = vault.imports.customers(caller(), "CRM", iter(rows))
    changed = {o: _sample("piivault_import_rows_total", kind="customers", outcome=o) - before[o] for o in outcomes}
    assert changed == {"created": 2, "merged": 1, "unchanged": 1, "rejected": 1}
    assert changed == {o: summary.counts.get(o, 0) for o in outcomes}
