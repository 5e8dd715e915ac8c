"""KeyService over gRPC: admin only, streamed rotation progress, the minimum-version guard as FAILED_PRECONDITION."""

from __future__ import annotations

import grpc
import pytest

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from piivault.v1 import keys_pb2, keys_pb2_grpc
from tests.support.people import People
from vault.app import Vault
from vault.keys.service_keys import SERVICE_KEY_NAMES

SERVICE_KEYS = len(SERVICE_KEY_NAMES)

Metadata = tuple[tuple[str, str], ...]


def test_rotation_over_grpc(
    vault: Vault, channel: grpc.Channel, stub: pb_grpc.CustomerServiceStub, auth: Metadata, people: People
) -> None:
    for person in people.many(3):
        stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(mobile=person.mobile)), metadata=auth)
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    admin = (("authorization", f"Bearer {vault.tokens.create('ops', 'admin').secret}"),)

    with pytest.raises(grpc.RpcError) as denied:
        keys.GetKeyStatus(keys_pb2.GetKeyStatusRequest(), metadata=auth)  # a service token may not
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    status = keys.GetKeyStatus(keys_pb2.GetKeyStatusRequest(), metadata=admin)
    assert status.latest_version == 1
    assert [(c.kek_version, c.customer_deks, c.service_keys) for c in status.counts] == [(1, 3, SERVICE_KEYS)]

    progress = list(keys.RotateKek(keys_pb2.RotateKekRequest(), metadata=admin))
    assert progress[-1].new_version == 2
    assert progress[-1].progress.finished
    assert progress[-1].progress.rewrapped == 3 + SERVICE_KEYS

    with pytest.raises(grpc.RpcError) as refused:
        keys.SetMinDecryptionVersion(keys_pb2.SetMinDecryptionVersionRequest(version=3), metadata=admin)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reply = keys.SetMinDecryptionVersion(keys_pb2.SetMinDecryptionVersionRequest(version=2), metadata=admin)
    assert reply.min_decryption_version == 2
    listed = stub.ListCustomers(pb.ListCustomersRequest(purpose="customer_service"), metadata=auth)
    assert len(listed.customers) == 3


def test_streaming_calls_are_authenticated_too(channel: grpc.Channel) -> None:
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        list(keys.RewrapKeys(keys_pb2.RewrapKeysRequest()))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
