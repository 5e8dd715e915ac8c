"""Retention: a dry run changes nothing; a run erases inactive customers (not held ones) and lapses old consents."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from consent.models import Channel, ConsentAction, ConsentRequest, ConsentScope, ConsentState
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.errors import NotFound
from vault.storage.models import ConsentStateRow, CustomerRow

SMS = ConsentRequest("marketing_sms", ConsentScope.STANDARD, Channel.WEB, notice_version="v1", notice_sha256="cd" * 32)


def test_dry_run_then_run(vault: Vault, people: People) -> None:
    active, idle, held, consented = (vault.customers.create(caller(), "", profile_of(p)) for p in people.many(4))
    vault.consents.grant(caller(), consented.customer_id, SMS)
    vault.consents.grant(caller(), active.customer_id, SMS)
    vault.dsar.set_legal_hold(dpo(), held.customer_id, hold=True)
    four_years_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=4 * 365)
    with vault.database.write() as connection:
        connection.execute(
            update(CustomerRow)
            .where(CustomerRow.customer_id.in_([idle.customer_id, held.customer_id]))
            .values(update_time=four_years_ago)
        )
        connection.execute(
            update(ConsentStateRow)
            .where(ConsentStateRow.customer_id == consented.customer_id)
            .values(update_time=four_years_ago)  # granted four years ago: past marketing_sms's 730 days
        )

    plan = vault.retention.plan()
    assert plan.erase == [idle.customer_id] and plan.blocked == [held.customer_id]
    assert plan.lapse == [(consented.customer_id, "marketing_sms", "standard")]
    assert vault.customers.get(dpo(), idle.customer_id).customer_id == idle.customer_id  # the dry run changed nothing

    vault.retention.run()
    with pytest.raises(NotFound):
        vault.customers.get(dpo(), idle.customer_id)
    assert vault.shredder.subject(idle.customer_id) in vault.shredder._ledger.subjects()
    assert vault.customers.get(dpo(), held.customer_id).customer_id == held.customer_id
    states = {(s.purpose, s.scope): s.state for s in vault.consents.current(dpo(), consented.customer_id)}
    assert states[("marketing_sms", ConsentScope.STANDARD)] is ConsentState.WITHDRAWN
    last = vault.consents.history(dpo(), consented.customer_id, "", 0, "").records[-1]
    assert (last.action, last.channel, last.actor) == (ConsentAction.WITHDRAW, Channel.SYSTEM, "system:retention")
    active_states = {(s.purpose, s.scope): s.state for s in vault.consents.current(dpo(), active.customer_id)}
    assert active_states[("marketing_sms", ConsentScope.STANDARD)] is ConsentState.GRANTED
    assert vault.retention.plan().erase == []  # idempotent: nothing left to do
    assert vault.audit_verifier.verify().intact
