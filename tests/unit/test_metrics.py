"""PIIVAULT_METRICS_LISTEN: checked at start-up with errors that name the variable and the rule; the endpoint binds
where it says, refuses a taken port with a clear error, and the multiprocess endpoint cleans up after itself."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.metrics import scrape
from tests.support.server import free_port
from vault.config import ConfigError, Settings
from vault.observability import metrics


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("9100", "must be host:port"),
        (":9100", "must be host:port"),
        ("localhost:", "must be host:port"),
        ("127.0.0.1:http", "must be host:port"),
        ("127.0.0.1:٩٤٦٤", "must be host:port"),  # Arabic-Indic digits: isdigit() alone would accept them
        ("127.0.0.1:70000", "must name a port from 0 to 65535"),
        ("::1:9100", "must put an IPv6 address in brackets"),
    ],
)
def test_a_malformed_listen_address_is_refused_naming_the_variable_not_the_value(value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PIIVAULT_METRICS_LISTEN": value})
    message = str(caught.value)
    assert message.startswith("PIIVAULT_METRICS_LISTEN ") and rule in message
    assert value not in message


@pytest.mark.parametrize("value", ["127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464", "metrics.internal:9464"])
def test_well_formed_listen_addresses_are_accepted(value: str) -> None:
    assert Settings.from_env({"PIIVAULT_METRICS_LISTEN": value}).metrics_listen == value


def test_metrics_are_off_by_default() -> None:
    assert Settings.from_env({}).metrics_listen == ""


def test_the_endpoint_serves_metrics_where_it_is_told_and_stops() -> None:
    port = free_port()
    endpoint = metrics.start_endpoint(f"127.0.0.1:{port}")
    try:
        assert endpoint.port == port
        assert "# TYPE piivault_rpc_requests_total counter" in scrape(f"http://127.0.0.1:{port}/metrics").text
    finally:
        endpoint.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_taken_port_is_a_clear_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="PIIVAULT_METRICS_LISTEN cannot be bound"):
            metrics.start_endpoint(f"127.0.0.1:{port}")


def test_the_multiprocess_endpoint_owns_its_directory_and_removes_it() -> None:
    assert metrics.MULTIPROCESS_ENV not in os.environ
    endpoint = metrics.start_multiprocess_endpoint(f"127.0.0.1:{free_port()}")
    try:
        directory = Path(os.environ[metrics.MULTIPROCESS_ENV])
        assert directory == endpoint.directory and directory.is_dir()
        scrape(f"http://127.0.0.1:{endpoint.port}/metrics")  # no worker has written yet: an empty, valid answer
    finally:
        endpoint.stop()
    assert metrics.MULTIPROCESS_ENV not in os.environ and not directory.exists()


def _requests(service: str, method: str, code: str) -> float:
    labels = {"service": service, "method": method, "code": code}
    return REGISTRY.get_sample_value("piivault_rpc_requests_total", labels) or 0.0


def test_rpc_counters_label_service_method_and_code() -> None:
    counters = metrics.RpcCounters()
    get = "/piivault.v1.CustomerService/GetCustomer"
    unknown, served = (
        _requests("unknown", "unknown", "UNIMPLEMENTED"),
        _requests("piivault.v1.CustomerService", get, "OK"),
    )
    counters.record(metrics.UNKNOWN_METHOD, "UNIMPLEMENTED", 0.0)
    for _ in range(2):
        counters.record(get, "OK", 0.001)
    assert _requests("unknown", "unknown", "UNIMPLEMENTED") - unknown == 1
    assert _requests("piivault.v1.CustomerService", get, "OK") - served == 2
