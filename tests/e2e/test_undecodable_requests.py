"""Messages that do not parse — invalid UTF-8 in a string field, truncated bytes — are INVALID_ARGUMENT (after
authentication) and audited, never INTERNAL: gRPC's own answer for them would be "Exception deserializing request".

These calls are raw on purpose: they send bytes the SDK cannot produce (its requests are valid protobuf messages), and
an anonymous call with no metadata at all."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from audit.queries import AuditQueries, EventFilter
from vault.app import Vault

BAD_UTF8 = b"\xff\xfe\xfd"
CASES = [
    ("/piivault.v1.CustomerService/GetCustomer", b"\x0a\x03" + BAD_UTF8 + b"\x12\x10customer_service"),
    ("/piivault.v1.CustomerService/FindCustomers", b"\x0a\x03" + BAD_UTF8),
    ("/piivault.v1.CustomerService/CreateCustomer", b"\x0a\x05\x1a\x03" + BAD_UTF8),  # customer.name
    ("/piivault.v1.ConsentService/ListConsents", b"\x0a\x03" + BAD_UTF8),
    ("/piivault.v1.CustomerService/GetCustomer", b"\x0a\x40abc"),  # truncated: says 64 bytes, has 3
]


# Parsing happens before any key is used: the local keyring is enough (both databases still run).
pytestmark = pytest.mark.local_keyring


def identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize(("method", "payload"), CASES)
def test_an_undecodable_request_is_invalid_argument_and_audited(
    vault: Vault, channel: grpc.Channel, method: str, payload: bytes
) -> None:
    token = vault.tokens.create("pos-raw", "service").secret
    call = channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)
    with pytest.raises(grpc.RpcError) as anonymous:
        call(payload)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED  # authentication still comes first
    with pytest.raises(grpc.RpcError) as caught:
        call(payload, metadata=(("authorization", f"Bearer {token}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    events = [e for chunk in AuditQueries(vault.database).events(EventFilter(principal="pos-raw")) for e in chunk]
    assert [(e.action, e.outcome) for e in events] == [(method, "invalid")]


def test_an_undecodable_message_in_a_client_stream_is_invalid_argument(vault: Vault, channel: grpc.Channel) -> None:
    token = vault.tokens.create("pos-raw", "service").secret
    call = channel.stream_unary(
        "/piivault.v1.CustomerService/ImportCustomers", request_serializer=identity, response_deserializer=identity
    )

    def rows() -> Iterator[bytes]:
        yield b"\x0a\x03crm\x10\x02"  # source "crm", row 2: fine
        yield b"\x22\x03" + BAD_UTF8  # external_id with invalid UTF-8

    with pytest.raises(grpc.RpcError) as caught:
        call(rows(), metadata=(("authorization", f"Bearer {token}"),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
