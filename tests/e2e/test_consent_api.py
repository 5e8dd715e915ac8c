"""Consent over gRPC: grant, read, withdraw, refuse, history — and lookup budgets with their audit events."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from audit.queries import AuditQueries, EventFilter
from piivault.v1 import consent_pb2 as cpb
from piivault.v1 import consent_pb2_grpc as cpb_grpc
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People, customer_message
from tests.support.scan import find_in_bytes, needles
from vault.api.server import start_server
from vault.app import Vault
from vault.config import Settings
from vault.keys.provider import KeyProvider
from vault.storage.db import Database

NOTICE_SHA256 = hashlib.sha256("短信营销隐私告知 2026-03".encode()).hexdigest()
Metadata = tuple[tuple[str, str], ...]


def bearer(vault: Vault, principal: str, role: str) -> Metadata:
    return (("authorization", f"Bearer {vault.tokens.create(principal, role).secret}"),)


def reason_of(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for packed in status.details if status else []:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return str(info.reason)
    return ""


def test_grant_read_withdraw_refused_and_history(vault: Vault, channel: grpc.Channel, people: People) -> None:
    pos, crm = bearer(vault, "pos-1", "service"), bearer(vault, "crm-campaigns", "marketing")
    customers, consents = pb_grpc.CustomerServiceStub(channel), cpb_grpc.ConsentServiceStub(channel)
    person = people.next()
    customer_id = customers.CreateCustomer(
        pb.CreateCustomerRequest(customer=customer_message(person)), metadata=pos
    ).customer.customer_id
    read = pb.GetCustomerRequest(customer_id=customer_id, purpose="marketing_sms")

    consents.GrantConsent(
        cpb.GrantConsentRequest(
            customer_id=customer_id,
            purpose="marketing_sms",
            scope=cpb.CONSENT_SCOPE_STANDARD,
            notice_version="2026-03",
            notice_sha256=NOTICE_SHA256,
            channel=cpb.CONSENT_CHANNEL_MINI_PROGRAM,
            evidence_ref="mp-session 8812",
        ),
        metadata=pos,
    )
    shown = customers.GetCustomer(read, metadata=crm).customer
    assert shown.mobile == "+86" + person.mobile and "mobile" not in shown.masked_fields
    assert {"email", "national_id", "address"} <= set(shown.masked_fields)

    consents.WithdrawConsent(
        cpb.WithdrawConsentRequest(
            customer_id=customer_id, purpose="marketing_sms", channel=cpb.CONSENT_CHANNEL_CALL_CENTRE
        ),
        metadata=pos,
    )
    with pytest.raises(grpc.RpcError) as refused:
        customers.GetCustomer(read, metadata=crm)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value) == "CONSENT_REQUIRED"
    assert find_in_bytes(repr(refused.value).encode(), needles([person])) == []

    history = consents.GetConsentHistory(cpb.GetConsentHistoryRequest(customer_id=customer_id), metadata=crm)
    grant, withdrawal = history.records
    assert (grant.action, withdrawal.action) == (cpb.CONSENT_ACTION_GRANT, cpb.CONSENT_ACTION_WITHDRAW)
    assert grant.notice_sha256 == NOTICE_SHA256 and grant.channel == cpb.CONSENT_CHANNEL_MINI_PROGRAM
    assert withdrawal.channel == cpb.CONSENT_CHANNEL_CALL_CENTRE
    assert grant.record_time.ToDatetime() <= withdrawal.record_time.ToDatetime()
    assert grant.actor == "pos-1" and grant.actor_role == "service"
    states = consents.ListConsents(cpb.ListConsentsRequest(customer_id=customer_id), metadata=crm).consents
    sms = [s for s in states if s.purpose == "marketing_sms"]
    assert [s.state for s in sms] == [cpb.CONSENT_STATE_WITHDRAWN]

    events = [e for chunk in AuditQueries(vault.database).events(EventFilter(customer_id=customer_id)) for e in chunk]
    refusal = events[-3]  # then the history read, then the ListConsents read
    assert (refusal.action, refusal.outcome, refusal.purpose) == (
        "/piivault.v1.CustomerService/GetCustomer",
        "consent_required",
        "marketing_sms",
    )
    assert [e.outcome for e in events if e.action.endswith("GrantConsent")] == ["ok"]


@pytest.fixture
def tight_channel(
    settings: Settings, database: Database, key_provider: KeyProvider
) -> Iterator[tuple[Vault, grpc.Channel]]:
    opened = Vault.open(dataclasses.replace(settings, lookups_per_minute=2), database=database, provider=key_provider)
    running = start_server(opened, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield opened, channel
    finally:
        running.stop(grace=1)
        opened.close()


def test_lookups_over_budget_are_resource_exhausted_and_audited(
    tight_channel: tuple[Vault, grpc.Channel], people: People
) -> None:
    vault, channel = tight_channel
    pos = bearer(vault, "pos-9", "service")
    customers = pb_grpc.CustomerServiceStub(channel)
    person = people.next()
    customers.CreateCustomer(pb.CreateCustomerRequest(customer=customer_message(person)), metadata=pos)
    find = pb.FindCustomersRequest(mobile=person.mobile, purpose="customer_service")
    for _ in range(2):
        assert len(customers.FindCustomers(find, metadata=pos).customers) == 1
    with pytest.raises(grpc.RpcError) as caught:
        customers.FindCustomers(find, metadata=pos)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) == "LOOKUP_RATE_EXCEEDED"
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    events = [e for chunk in AuditQueries(vault.database).events(EventFilter(principal="pos-9")) for e in chunk]
    assert events[-1].outcome == "rate_limited" and events[-1].action.endswith("FindCustomers")
