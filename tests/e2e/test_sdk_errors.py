"""The SDK's typed exceptions (issue 9, acceptance 2): a validation error names the field and never the value, and
every status code the vault (or the network) answers with is its own exception class, with its rich details decoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select, update

from piivault.client import (
    Aborted,
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PiiVault,
    PiiVaultError,
    ResourceExhausted,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)
from piivault.client.errors import ERROR_CLASSES, from_rpc_error
from piivault.v1 import customers_pb2 as pb
from tests.e2e.conftest import Connect
from tests.support.flaky_proxy import Fault, FlakyProxy
from tests.support.people import People, customer_message
from vault.api.server import start_server
from vault.app import Vault
from vault.auth.tokens import IssuedToken
from vault.config import Settings
from vault.keys.provider import KeyProvider
from vault.storage.db import Database
from vault.storage.models import CustomerRow

# What the client raises does not depend on where the KEK lives (both databases still run).
pytestmark = pytest.mark.local_keyring

PURPOSE = "customer_service"


@pytest.fixture
def flaky(connect: Connect, proxy: FlakyProxy, service_token: IssuedToken) -> PiiVault:
    """A service client whose calls go through the proxy, retrying with short backoffs."""
    return connect(service_token.secret, address=proxy.address, retry=RetryPolicy(initial_backoff=0.01))


def test_a_validation_error_is_a_typed_exception_naming_the_field(
    flaky: PiiVault, proxy: FlakyProxy, people: People
) -> None:
    customer = customer_message(people.next())
    bad_id = customer.national_id[:17] + ("0" if customer.national_id[17] != "0" else "1")
    customer.national_id = bad_id
    with pytest.raises(InvalidArgument) as caught:
        flaky.customers.create(customer)
    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and error.attempts == 1
    assert error.fields == ["customer.national_id"]
    ((field, rule),) = error.field_violations
    assert field == "customer.national_id" and "check digit" in rule
    assert "customer.national_id" in str(error)
    for text in (str(error), repr(error), error.message, rule, str(error.status), str(error.__cause__)):
        assert bad_id not in text and bad_id[:6] not in text
    assert len(proxy.attempts("CustomerService/CreateCustomer")) == 1


@pytest.fixture
def tight(settings: Settings, database: Database, key_provider: KeyProvider) -> Iterator[tuple[Vault, str]]:
    """A server whose lookup budget is two finds a minute."""
    opened = Vault.open(dataclasses.replace(settings, lookups_per_minute=2), database=database, provider=key_provider)
    running = start_server(opened, "127.0.0.1:0")
    yield opened, f"127.0.0.1:{running.port}"
    running.stop(grace=1)
    opened.close()


def test_every_status_of_the_vault_is_its_typed_exception(
    vault: Vault, client: PiiVault, connect: Connect, proxy: FlakyProxy, people: People
) -> None:
    person = people.next()
    owner = client.customers.create(customer_message(person), request_id="mapping-1").customer
    with pytest.raises(NotFound):
        client.customers.get("00000000-0000-4000-8000-000000000000", purpose=PURPOSE)
    with pytest.raises(AlreadyExists) as exists:
        client.customers.create(pb.Customer(name="另一个人", mobile=person.mobile))
    assert (exists.value.existing_customer_id, exists.value.field) == (owner.customer_id, "customer.mobile")
    change = pb.Customer(customer_id=owner.customer_id, address="新地址")
    client.customers.update(change, fields=["address"], expected_version=1)
    with pytest.raises(Aborted) as stale:
        client.customers.update(change, fields=["address"], expected_version=1)
    assert stale.value.reason == "VERSION_MISMATCH"
    with pytest.raises(FailedPrecondition) as reused:
        client.customers.create(customer_message(people.next()), request_id="mapping-1")  # same id, other body
    assert reused.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(PermissionDenied) as role:
        connect(vault.tokens.create("aud-1", "auditor").secret).customers.get(owner.customer_id, purpose=PURPOSE)
    assert role.value.reason == "ROLE_NOT_ALLOWED"
    with pytest.raises(PermissionDenied) as purpose:
        client.customers.get(owner.customer_id, purpose="dsar")
    assert purpose.value.reason == "PURPOSE_NOT_ALLOWED"
    with pytest.raises(Unauthenticated):
        connect("pvt_" + "B" * 43).customers.get(owner.customer_id, purpose=PURPOSE)
    proxy.fail("CustomerService/GetCustomer", Fault.REFUSE)
    with pytest.raises(Unavailable):
        connect(None, address=proxy.address).customers.get(owner.customer_id, purpose=PURPOSE)
    proxy.fail("CustomerService/GetCustomer", Fault.DELAY)
    slow = connect(client_token(vault), address=proxy.address, default_timeout=0.5)
    with pytest.raises(DeadlineExceeded):
        slow.customers.get(owner.customer_id, purpose=PURPOSE)
    other = client.customers.create(customer_message(people.next())).customer
    with vault.database.write() as connection:  # another customer's ciphertext in this one's email
        stolen = connection.execute(
            select(CustomerRow.email_ct).where(CustomerRow.customer_id == other.customer_id)
        ).scalar()
        connection.execute(
            update(CustomerRow).where(CustomerRow.customer_id == owner.customer_id).values(email_ct=stolen)
        )
    with pytest.raises(DataLoss):
        client.customers.get(owner.customer_id, purpose=PURPOSE)


def client_token(vault: Vault) -> str:
    return vault.tokens.create("pos-slow", "service").secret


def test_a_spent_lookup_budget_is_resource_exhausted_with_its_retry_delay(
    tight: tuple[Vault, str], connect: Connect, people: People
) -> None:
    vault, address = tight
    pos = connect(vault.tokens.create("pos-9", "service").secret, address=address)
    person = people.next()
    pos.customers.create(customer_message(person))
    for _ in range(2):
        pos.customers.find(mobile=person.mobile, purpose=PURPOSE)
    with pytest.raises(ResourceExhausted) as caught:
        pos.customers.find(mobile=person.mobile, purpose=PURPOSE)
    assert caught.value.reason == "LOOKUP_RATE_EXCEEDED"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60


def _rpc_error(code: grpc.StatusCode, trailer: bytes | None) -> grpc.RpcError:
    class Failed(grpc.RpcError, grpc.Call):
        def code(self) -> grpc.StatusCode:
            return code

        def details(self) -> str:
            return "fixed message"

        def trailing_metadata(self) -> Any:
            return (("grpc-status-details-bin", trailer),) if trailer is not None else ()

        def initial_metadata(self) -> tuple[tuple[str, str], ...]:
            return ()

        def is_active(self) -> bool:
            return False

        def time_remaining(self) -> float:
            return 0.0

        def cancel(self) -> bool:
            return False

        def add_callback(self, callback: object) -> bool:
            return False

    return Failed()


def test_the_mapping_table_covers_every_code_and_distrusts_foreign_details() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        mapped = from_rpc_error(_rpc_error(code, None))
        assert type(mapped) is ERROR_CLASSES.get(code, PiiVaultError) and mapped.code is code
        assert isinstance(mapped, PiiVaultError) and mapped.message == "fixed message"
    assert len(ERROR_CLASSES) == 11  # every code the vault answers with, plus UNAVAILABLE and DEADLINE_EXCEEDED
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7)))
    bad = any_pb2.Any()
    bad.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "purpose", "description": "unknown"}]))
    exhausted = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], details=[retry])
    mapped = from_rpc_error(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, exhausted.SerializeToString()))
    assert isinstance(mapped, ResourceExhausted) and mapped.retry_after == 7
    invalid = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], details=[bad])
    mapped = from_rpc_error(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, invalid.SerializeToString()))
    assert isinstance(mapped, InvalidArgument) and mapped.field_violations == [("purpose", "unknown")]
    # A Status for another code (a proxy's, say) or bytes that do not parse are ignored, not trusted.
    mapped = from_rpc_error(_rpc_error(grpc.StatusCode.NOT_FOUND, invalid.SerializeToString()))
    assert mapped.status is None and mapped.details == ()
    mapped = from_rpc_error(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, b"\xff\xff not a status"))
    assert isinstance(mapped, InvalidArgument) and mapped.field_violations == []
