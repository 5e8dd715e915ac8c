"""CustomerService over real gRPC (in-process server): status codes, rich error details, auth, health, reflection."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import select, update

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People, customer_message
from vault.app import Vault
from vault.storage.models import CustomerRow

Metadata = tuple[tuple[str, str], ...]
PURPOSE = "customer_service"


@pytest.fixture
def dpo_auth(vault: Vault) -> Metadata:
    return (("authorization", f"Bearer {vault.tokens.create('dpo-1', 'dpo').secret}"),)


def details(error: grpc.RpcError) -> tuple[list[error_details_pb2.BadRequest.FieldViolation], dict[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    info: dict[str, str] = {}
    for packed in status.details if status else []:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations.extend(bad.field_violations)
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            packed.Unpack(error_info)
            info = dict(error_info.metadata)
    return violations, info


def test_create_reads_back_identically(
    stub: pb_grpc.CustomerServiceStub, auth: Metadata, dpo_auth: Metadata, people: People
) -> None:
    person = people.next()
    created = stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=customer_message(person), request_id="r1"), metadata=auth
    )
    read = stub.GetCustomer(
        pb.GetCustomerRequest(customer_id=created.customer.customer_id, purpose="dsar"), metadata=dpo_auth
    )
    assert read.customer == created.customer and not read.customer.masked_fields
    assert read.customer.mobile == "+86" + person.mobile and read.customer.gender == pb.GENDER_FEMALE


@pytest.mark.parametrize("written", ["13800138000", "+86 138-0013-8000", "0086 13800138000", "１３８００１３８０００"])
def test_find_by_mobile_in_every_form(
    stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People, written: str
) -> None:
    customer = customer_message(people.next())
    customer.mobile = "13800138000"
    created = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer), metadata=auth).customer
    found = stub.FindCustomers(pb.FindCustomersRequest(mobile=written, purpose=PURPOSE), metadata=auth)
    assert [c.customer_id for c in found.customers] == [created.customer_id]


def test_invalid_national_id_gets_a_field_violation_without_the_value(
    stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People
) -> None:
    customer = customer_message(people.next())
    bad_id = customer.national_id[:17] + ("0" if customer.national_id[17] != "0" else "1")
    customer.national_id = bad_id
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations, _ = details(caught.value)
    assert [v.field for v in violations] == ["customer.national_id"]
    assert bad_id not in str(caught.value.details()) and bad_id not in violations[0].description


def test_duplicate_identifier_is_already_exists_with_the_owner(
    stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People
) -> None:
    person = people.next()
    owner = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(person)), metadata=auth).customer
    again = pb.Customer(name="另一个人", mobile="+86 " + person.mobile)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=again), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(caught.value)[1] == {"customer_id": owner.customer_id, "field": "customer.mobile"}


def test_update_mask_and_stale_version(stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People) -> None:
    created = stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=customer_message(people.next())), metadata=auth
    ).customer
    request = pb.UpdateCustomerRequest(
        customer=pb.Customer(customer_id=created.customer_id, address="北京市朝阳区"),
        update_mask=field_mask_pb2.FieldMask(paths=["address"]),
        expected_version=1,
    )
    updated = stub.UpdateCustomer(request, metadata=auth).customer
    assert updated.version == 2 and updated.address == "北京市朝阳区"
    # What the caller did not write comes back masked.
    assert updated.name[0] == created.name[0] and updated.name != created.name and "name" in updated.masked_fields
    assert "address" not in updated.masked_fields
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateCustomer(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.ABORTED


def test_concurrent_creates_with_one_request_id_and_concurrent_updates(
    stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People
) -> None:
    request = pb.CreateCustomerRequest(customer=customer_message(people.next()), request_id="shared-request-id")
    barrier = threading.Barrier(100)

    def create(_: int) -> str:
        barrier.wait()
        return str(stub.CreateCustomer(request, metadata=auth).customer.customer_id)

    with ThreadPoolExecutor(100) as pool:
        ids = set(pool.map(create, range(100)))
    assert len(ids) == 1
    listed = stub.ListCustomers(pb.ListCustomersRequest(page_size=500, purpose=PURPOSE), metadata=auth)
    assert [c.customer_id for c in listed.customers] == list(ids)

    (customer_id,) = ids
    pair = threading.Barrier(2)

    def rename(name: str) -> grpc.StatusCode:
        pair.wait()
        try:
            stub.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    customer=pb.Customer(customer_id=customer_id, name=name),
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                    expected_version=1,
                ),
                metadata=auth,
            )
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(rename, ["甲", "乙"]), key=str)
    assert codes == sorted([grpc.StatusCode.OK, grpc.StatusCode.ABORTED], key=str)


def test_tampered_ciphertext_is_data_loss_with_no_plaintext(
    vault: Vault, stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People
) -> None:
    a = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(people.next())), metadata=auth).customer
    b = stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(people.next())), metadata=auth).customer
    with vault.database.write() as connection:
        stolen = connection.execute(
            select(CustomerRow.email_ct).where(CustomerRow.customer_id == a.customer_id)
        ).scalar()
        connection.execute(update(CustomerRow).where(CustomerRow.customer_id == b.customer_id).values(email_ct=stolen))
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCustomer(pb.GetCustomerRequest(customer_id=b.customer_id, purpose=PURPOSE), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert a.email not in str(caught.value.details())


def test_authentication_and_roles(vault: Vault, stub: pb_grpc.CustomerServiceStub, auth: Metadata) -> None:
    request = pb.ListCustomersRequest(purpose=PURPOSE)
    for metadata in ((), (("authorization", "Bearer pvt_" + "A" * 43),), (("authorization", "Basic abc"),)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListCustomers(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for role in ("auditor", "admin", "analyst"):  # no personal data for these roles, ever
        other = vault.tokens.create(f"{role}-1", role)
        with pytest.raises(grpc.RpcError) as denied:
            stub.ListCustomers(request, metadata=(("authorization", f"Bearer {other.secret}"),))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    second = vault.tokens.create("pos-2", "service")
    stub.ListCustomers(request, metadata=(("authorization", f"Bearer {second.secret}"),))
    vault.tokens.revoke(second.token_id)
    with pytest.raises(grpc.RpcError) as revoked:
        stub.ListCustomers(request, metadata=(("authorization", f"Bearer {second.secret}"),))
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "piivault.v1.CustomerService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert "piivault.v1.CustomerService" in names


def test_oversized_request_is_refused(stub: pb_grpc.CustomerServiceStub, auth: Metadata) -> None:
    huge = pb.Customer(mobile="13800138000", address="x" * (5 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=huge), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
