"""Consent through the SDK: grant, read, withdraw, refuse, history — and lookup budgets with their audit events."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator

import pytest
from google.rpc import error_details_pb2

from audit.queries import AuditQueries, EventFilter
from piivault.client import FailedPrecondition, PiiVault, ResourceExhausted
from piivault.v1 import consent_pb2 as cpb
from tests.e2e.conftest import Connect
from tests.support.people import People, customer_message
from tests.support.scan import find_in_bytes, needles
from vault.api.server import start_server
from vault.app import Vault
from vault.config import Settings
from vault.keys.provider import KeyProvider
from vault.storage.db import Database

# What these RPCs answer does not depend on where the KEK lives; the Vault Transit path is covered by the
# integration tests and tests/e2e/test_grpc_api.py, so this module runs with the local keyring only.
pytestmark = pytest.mark.local_keyring

NOTICE_SHA256 = hashlib.sha256("短信营销隐私告知 2026-03".encode()).hexdigest()


def test_grant_read_withdraw_refused_and_history(
    vault: Vault, as_role: Callable[[str, str], PiiVault], people: People
) -> None:
    pos, crm = as_role("pos-1", "service"), as_role("crm-campaigns", "marketing")
    person = people.next()
    customer_id = pos.customers.create(customer_message(person)).customer.customer_id

    pos.consent.grant(
        customer_id,
        purpose="marketing_sms",
        scope=cpb.CONSENT_SCOPE_STANDARD,
        notice_version="2026-03",
        notice_sha256=NOTICE_SHA256,
        channel=cpb.CONSENT_CHANNEL_MINI_PROGRAM,
        evidence_ref="mp-session 8812",
    )
    shown = crm.customers.get(customer_id, purpose="marketing_sms").customer
    assert shown.mobile == "+86" + person.mobile and "mobile" not in shown.masked_fields
    assert {"email", "national_id", "address"} <= set(shown.masked_fields)

    pos.consent.withdraw(customer_id, purpose="marketing_sms", channel=cpb.CONSENT_CHANNEL_CALL_CENTRE)
    with pytest.raises(FailedPrecondition) as refused:
        crm.customers.get(customer_id, purpose="marketing_sms")
    assert refused.value.reason == "CONSENT_REQUIRED"
    seen = repr(refused.value).encode() + repr(refused.value.__cause__).encode() + repr(refused.value.details).encode()
    assert find_in_bytes(seen, needles([person])) == []

    history = crm.consent.history(customer_id)
    grant, withdrawal = history.records
    assert (grant.action, withdrawal.action) == (cpb.CONSENT_ACTION_GRANT, cpb.CONSENT_ACTION_WITHDRAW)
    assert grant.notice_sha256 == NOTICE_SHA256 and grant.channel == cpb.CONSENT_CHANNEL_MINI_PROGRAM
    assert withdrawal.channel == cpb.CONSENT_CHANNEL_CALL_CENTRE
    assert grant.record_time.ToDatetime() <= withdrawal.record_time.ToDatetime()
    assert grant.actor == "pos-1" and grant.actor_role == "service"
    states = crm.consent.list(customer_id).consents
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
def tight_server(settings: Settings, database: Database, key_provider: KeyProvider) -> Iterator[tuple[Vault, str]]:
    opened = Vault.open(dataclasses.replace(settings, lookups_per_minute=2), database=database, provider=key_provider)
    running = start_server(opened, "127.0.0.1:0")
    try:
        yield opened, f"127.0.0.1:{running.port}"
    finally:
        running.stop(grace=1)
        opened.close()


def test_lookups_over_budget_are_resource_exhausted_and_audited(
    tight_server: tuple[Vault, str], connect: Connect, people: People
) -> None:
    vault, address = tight_server
    pos = connect(vault.tokens.create("pos-9", "service").secret, address=address)
    person = people.next()
    pos.customers.create(customer_message(person))
    for _ in range(2):
        assert len(pos.customers.find(mobile=person.mobile, purpose="customer_service").customers) == 1
    with pytest.raises(ResourceExhausted) as caught:
        pos.customers.find(mobile=person.mobile, purpose="customer_service")
    assert caught.value.reason == "LOOKUP_RATE_EXCEEDED"
    assert caught.value.status is not None
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in caught.value.status.details)
    assert caught.value.retry_after is not None
    events = [e for chunk in AuditQueries(vault.database).events(EventFilter(principal="pos-9")) for e in chunk]
    assert events[-1].outcome == "rate_limited" and events[-1].action.endswith("FindCustomers")
