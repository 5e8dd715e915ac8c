"""ImportCustomers over gRPC (client streaming): merged rows, rejected rows with the field, one customer per person."""

from __future__ import annotations

import grpc

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People
from tests.support.scan import find_in_bytes, needles
from vault.app import Vault


def test_import_customers_streams_rows_and_merges(vault: Vault, channel: grpc.Channel, people: People) -> None:
    auth = (("authorization", f"Bearer {vault.tokens.create('crm-import', 'service').secret}"),)
    person = people.next()
    m = person.mobile
    rows = [
        pb.ImportCustomersRequest(
            source="CRM", row=2, customer=pb.Customer(name=person.name, mobile=m), external_id="C-1"
        ),
        pb.ImportCustomersRequest(row=3, customer=pb.Customer(mobile=f"+86 {m}", email=person.email)),
        pb.ImportCustomersRequest(row=4, customer=pb.Customer(name="x", mobile="12")),
        pb.ImportCustomersRequest(row=5, customer=pb.Customer(mobile=m, gender=99)),  # type: ignore[arg-type]
    ]
    results = pb_grpc.CustomerServiceStub(channel).ImportCustomers(iter(rows), metadata=auth).results
    assert [(r.row, r.outcome, r.reason, r.field) for r in results] == [
        (2, "created", "", ""),
        (3, "merged", "", ""),
        (4, "rejected", "invalid", "mobile"),
        (5, "rejected", "invalid", "customer.gender"),
    ]
    assert results[0].customer_id == results[1].customer_id and list(results[1].filled) == ["email"]
    assert find_in_bytes(b"".join(r.SerializeToString() for r in results), needles([person])) == []
