"""ImportCustomers through the SDK (client streaming): merged rows, rejected rows with the field, one customer per
person."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from piivault.client import PiiVault
from piivault.v1 import customers_pb2 as pb
from tests.support.people import People
from tests.support.scan import find_in_bytes, needles

# What these RPCs answer does not depend on where the KEK lives; the Vault Transit path is covered by the
# integration tests and tests/e2e/test_grpc_api.py, so this module runs with the local keyring only.
pytestmark = pytest.mark.local_keyring


def test_import_customers_streams_rows_and_merges(as_role: Callable[[str, str], PiiVault], people: People) -> None:
    crm = as_role("crm-import", "service")
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
    results = crm.imports.customers(iter(rows)).results
    assert [(r.row, r.outcome, r.reason, r.field) for r in results] == [
        (2, "created", "", ""),
        (3, "merged", "", ""),
        (4, "rejected", "invalid", "mobile"),
        (5, "rejected", "invalid", "customer.gender"),
    ]
    assert results[0].customer_id == results[1].customer_id and list(results[1].filled) == ["email"]
    assert find_in_bytes(b"".join(r.SerializeToString() for r in results), needles([person])) == []
