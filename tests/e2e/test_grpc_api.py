"""CustomerService over real gRPC (in-process server) through the SDK: status codes, rich error details, auth,
health, reflection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import select, update

from piivault.client import (
    Aborted,
    AlreadyExists,
    DataLoss,
    InvalidArgument,
    PermissionDenied,
    PiiVault,
    PiiVaultError,
    ResourceExhausted,
    Unauthenticated,
)
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.e2e.conftest import Connect
from tests.support.people import People, customer_message
from vault.app import Vault
from vault.storage.models import CustomerRow

PURPOSE = "customer_service"


@pytest.fixture
def dpo_client(as_role: Callable[[str, str], PiiVault]) -> PiiVault:
    return as_role("dpo-1", "dpo")


def test_create_reads_back_identically(client: PiiVault, dpo_client: PiiVault, people: People) -> None:
    person = people.next()
    created = client.customers.create(customer_message(person), request_id="r1")
    read = dpo_client.customers.get(created.customer.customer_id, purpose="dsar")
    assert read.customer == created.customer and not read.customer.masked_fields
    assert read.customer.mobile == "+86" + person.mobile and read.customer.gender == pb.GENDER_FEMALE


@pytest.mark.parametrize("written", ["13800138000", "+86 138-0013-8000", "0086 13800138000", "１３８００１３８０００"])
def test_find_by_mobile_in_every_form(client: PiiVault, people: People, written: str) -> None:
    customer = customer_message(people.next())
    customer.mobile = "13800138000"
    created = client.customers.create(customer).customer
    found = client.customers.find(mobile=written, purpose=PURPOSE)
    assert [c.customer_id for c in found.customers] == [created.customer_id]


def test_invalid_national_id_gets_a_field_violation_without_the_value(client: PiiVault, people: People) -> None:
    customer = customer_message(people.next())
    bad_id = customer.national_id[:17] + ("0" if customer.national_id[17] != "0" else "1")
    customer.national_id = bad_id
    with pytest.raises(InvalidArgument) as caught:
        client.customers.create(customer)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    violations = caught.value.field_violations
    assert [v.field for v in violations] == ["customer.national_id"]
    assert bad_id not in caught.value.message and bad_id not in violations[0].description
    assert bad_id not in str(caught.value) and bad_id not in repr(caught.value)


def test_duplicate_identifier_is_already_exists_with_the_owner(client: PiiVault, people: People) -> None:
    person = people.next()
    owner = client.customers.create(customer_message(person)).customer
    again = pb.Customer(name="另一个人", mobile="+86 " + person.mobile)
    with pytest.raises(AlreadyExists) as caught:
        client.customers.create(again)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.metadata == {"customer_id": owner.customer_id, "field": "customer.mobile"}
    assert (caught.value.existing_customer_id, caught.value.field) == (owner.customer_id, "customer.mobile")


def test_update_mask_and_stale_version(client: PiiVault, people: People) -> None:
    created = client.customers.create(customer_message(people.next())).customer
    change = pb.Customer(customer_id=created.customer_id, address="北京市朝阳区")
    updated = client.customers.update(change, fields=["address"], expected_version=1).customer
    assert updated.version == 2 and updated.address == "北京市朝阳区"
    # What the caller did not write comes back masked.
    assert updated.name[0] == created.name[0] and updated.name != created.name and "name" in updated.masked_fields
    assert "address" not in updated.masked_fields
    with pytest.raises(Aborted) as caught:
        client.customers.update(change, fields=["address"], expected_version=1)
    assert caught.value.code == grpc.StatusCode.ABORTED


def test_concurrent_creates_with_one_request_id_and_concurrent_updates(client: PiiVault, people: People) -> None:
    customer = customer_message(people.next())
    barrier = threading.Barrier(100)

    def create(_: int) -> str:
        barrier.wait()
        return str(client.customers.create(customer, request_id="shared-request-id").customer.customer_id)

    with ThreadPoolExecutor(100) as pool:
        ids = set(pool.map(create, range(100)))
    assert len(ids) == 1
    listed = client.customers.list(page_size=500, purpose=PURPOSE)
    assert [c.customer_id for c in listed.customers] == list(ids)

    (customer_id,) = ids
    pair = threading.Barrier(2)

    def rename(name: str) -> grpc.StatusCode:
        pair.wait()
        try:
            client.customers.update(
                pb.Customer(customer_id=customer_id, name=name), fields=["name"], expected_version=1
            )
            return grpc.StatusCode.OK
        except PiiVaultError as error:
            return error.code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(rename, ["甲", "乙"]), key=str)
    assert codes == sorted([grpc.StatusCode.OK, grpc.StatusCode.ABORTED], key=str)


def test_tampered_ciphertext_is_data_loss_with_no_plaintext(vault: Vault, client: PiiVault, people: People) -> None:
    a = client.customers.create(customer_message(people.next())).customer
    b = client.customers.create(customer_message(people.next())).customer
    with vault.database.write() as connection:
        stolen = connection.execute(
            select(CustomerRow.email_ct).where(CustomerRow.customer_id == a.customer_id)
        ).scalar()
        connection.execute(update(CustomerRow).where(CustomerRow.customer_id == b.customer_id).values(email_ct=stolen))
    with pytest.raises(DataLoss) as caught:
        client.customers.get(b.customer_id, purpose=PURPOSE)
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    assert a.email not in caught.value.message and a.email not in str(caught.value.__cause__)


def test_authentication_and_roles(vault: Vault, connect: Connect, channel: grpc.Channel) -> None:
    for token in (None, "pvt_" + "A" * 43):  # no token at all; a well-formed token the vault never issued
        with pytest.raises(Unauthenticated):
            connect(token).customers.list(purpose=PURPOSE)
    # A malformed scheme is something the SDK cannot send: a raw stub forges the header.
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.CustomerServiceStub(channel).ListCustomers(
            pb.ListCustomersRequest(purpose=PURPOSE), metadata=(("authorization", "Basic abc"),)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for role in ("auditor", "admin", "analyst"):  # no personal data for these roles, ever
        other = vault.tokens.create(f"{role}-1", role)
        with pytest.raises(PermissionDenied):
            connect(other.secret).customers.list(purpose=PURPOSE)
    second = vault.tokens.create("pos-2", "service")
    pos = connect(second.secret)
    pos.customers.list(purpose=PURPOSE)
    vault.tokens.revoke(second.token_id)
    with pytest.raises(Unauthenticated):
        pos.customers.list(purpose=PURPOSE)


def test_health_and_reflection(channel: grpc.Channel) -> None:
    # Standard gRPC services, not the vault's API: the SDK has no methods for them, so they are called raw.
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "piivault.v1.CustomerService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert "piivault.v1.CustomerService" in names


def test_oversized_request_is_refused(client: PiiVault) -> None:
    huge = pb.Customer(mobile="13800138000", address="x" * (5 * 1024 * 1024))
    with pytest.raises(ResourceExhausted) as caught:
        client.customers.create(huge)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
