"""``piivault serve`` with PIIVAULT_METRICS_LISTEN and two worker processes on one port: the parent's endpoint sums
the workers' counts, which equal the calls made, with no customer id, request id or personal value in any label; the
endpoint and the workers' files go away at shutdown."""

from __future__ import annotations

import tempfile
import urllib.error
import uuid
from pathlib import Path

import grpc
import pytest

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.metrics import delta, scrape
from tests.support.people import People, customer_message
from tests.support.scan import find_in_bytes, needles
from tests.support.server import ServerProcess, free_port

SERVICE = "piivault.v1.CustomerService"
CREATE, GET, FIND, IMPORT = (
    f"/{SERVICE}/{name}" for name in ("CreateCustomer", "GetCustomer", "FindCustomers", "ImportCustomers")
)
PURPOSE = "customer_service"
CONNECTIONS = 8  # separate connections, so that SO_REUSEPORT spreads them over the workers


def _multiprocess_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("piivault-metrics-*"))


@pytest.mark.slow
def test_scraped_counts_equal_the_calls_and_hold_no_pii(tmp_path: Path) -> None:
    """Two worker processes (one process is the in-process case, in tests/integration/test_metrics.py)."""
    metrics_port = free_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    dirs_before = _multiprocess_dirs()
    env = {"PIIVAULT_PROCESSES": "2", "PIIVAULT_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}
    people = People(seed=41)
    persons = people.many(CONNECTIONS)
    invalid = people.many(4)
    imported = people.many(2)
    request_ids = [f"req-{uuid.uuid4().hex}" for _ in persons]
    with ServerProcess(tmp_path, env) as server:
        auth = server.metadata
        channels = [
            grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)
        ]
        stubs = [pb_grpc.CustomerServiceStub(channel) for channel in channels]
        try:
            before = scrape(url)
            ids = []
            for stub, person, request_id in zip(stubs, persons, request_ids, strict=True):
                reply = stub.CreateCustomer(
                    pb.CreateCustomerRequest(customer=customer_message(person), request_id=request_id),
                    metadata=(*auth, ("x-request-id", request_id)),
                )
                ids.append(reply.customer.customer_id)
            for n, customer_id in enumerate(ids * 2):
                stubs[n % CONNECTIONS].GetCustomer(
                    pb.GetCustomerRequest(customer_id=customer_id, purpose=PURPOSE), metadata=auth
                )
            for n, person in enumerate(persons):
                stubs[(n + 1) % CONNECTIONS].FindCustomers(
                    pb.FindCustomersRequest(mobile=person.mobile, purpose=PURPOSE), metadata=auth
                )
            for n, person in enumerate(invalid):
                customer = customer_message(person)
                customer.mobile = "12"
                with pytest.raises(grpc.RpcError) as caught:
                    stubs[n].CreateCustomer(pb.CreateCustomerRequest(customer=customer), metadata=auth)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            for n in range(3):
                with pytest.raises(grpc.RpcError) as caught:
                    stubs[n].GetCustomer(pb.GetCustomerRequest(customer_id=ids[n], purpose=PURPOSE))
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            rows = [
                pb.ImportCustomersRequest(source="CRM", row=2, customer=customer_message(imported[0])),
                pb.ImportCustomersRequest(row=3, customer=customer_message(imported[1])),
                pb.ImportCustomersRequest(row=4, customer=pb.Customer(name=imported[0].name, mobile="12")),
            ]
            stubs[0].ImportCustomers(iter(rows), metadata=auth)
            after = scrape(url)
        finally:
            for channel in channels:
                channel.close()
    assert delta(before.rpc_counts(), after.rpc_counts()) == {
        (CREATE, "OK"): CONNECTIONS,
        (CREATE, "INVALID_ARGUMENT"): len(invalid),
        (GET, "OK"): 2 * CONNECTIONS,
        (GET, "UNAUTHENTICATED"): 3,
        (FIND, "OK"): CONNECTIONS,
        (IMPORT, "OK"): 1,
    }
    assert after.value("piivault_rpc_duration_seconds_count", method=GET) == 2 * CONNECTIONS + 3
    assert after.value("piivault_import_rows_total", kind="customers", outcome="created") == 2
    assert after.value("piivault_import_rows_total", kind="customers", outcome="rejected") == 1
    assert after.value("piivault_group_commit_size_sum") >= CONNECTIONS + 2
    assert after.value("piivault_dek_cache_lookups_total") > 0

    everyone = persons + invalid + imported
    forbidden = [n.decode() for label, n in needles(everyone).items() if "/utf-8:" in label] + ids + request_ids
    assert [value for value in after.label_values() if any(f in value for f in forbidden)] == []
    assert find_in_bytes(after.text.encode(), needles(everyone)) == []
    assert [customer_id for customer_id in ids if customer_id in after.text] == []

    with pytest.raises(urllib.error.URLError):  # the endpoint stopped with the server
        scrape(url)
    assert _multiprocess_dirs() - dirs_before == set()  # and the workers' files are gone
