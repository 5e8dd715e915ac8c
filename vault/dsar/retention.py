"""Retention: erase customers inactive beyond the retention period, and let consents lapse after their purpose's
retention period (PIPL art. 19: kept no longer than the purpose needs).

A customer is inactive when nothing has changed for them (``update_time``) for ``inactive_days``; they are
crypto-shredded like an erasure request, ledger first — except under legal hold or restriction, which are reported
and skipped. A consent granted longer ago than its purpose's ``retention_days`` is withdrawn by the vault itself
(channel ``system``), so the next campaign has to ask again. ``plan`` changes nothing: it is the dry run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from audit.events import Caller
from consent.models import Channel, ConsentRequest, ConsentScope
from consent.purposes import PurposeRegistry
from consent.service import ConsentService
from vault.customers.erasure import CryptoShredder
from vault.storage.db import Database
from vault.storage.models import ConsentStateRow, CustomerRow

SYSTEM = Caller("system:retention", "system", "retention.run", purpose="retention")


@dataclass
class RetentionPlan:
    erase: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # inactive, but under legal hold or restriction
    lapse: list[tuple[str, str, str]] = field(default_factory=list)  # (customer_id, purpose, scope)


class RetentionJob:
    def __init__(
        self,
        database: Database,
        shredder: CryptoShredder,
        consents: ConsentService,
        registry: PurposeRegistry,
        inactive_days: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._database = database
        self._shredder = shredder
        self._consents = consents
        self._registry = registry
        self._inactive_days = inactive_days
        self._clock = clock

    def plan(self) -> RetentionPlan:
        now = self._clock()
        plan = RetentionPlan()
        cutoff = now - dt.timedelta(days=self._inactive_days)
        with self._database.read() as connection:
            inactive = connection.execute(
                select(CustomerRow.customer_id, CustomerRow.legal_hold, CustomerRow.restricted)
                .where(CustomerRow.update_time < cutoff)
                .order_by(CustomerRow.customer_id)
            ).all()
            granted = connection.execute(
                select(
                    ConsentStateRow.customer_id,
                    ConsentStateRow.purpose,
                    ConsentStateRow.scope,
                    ConsentStateRow.update_time,
                )
                .where(ConsentStateRow.granted.is_(True))
                .order_by(ConsentStateRow.customer_id)
            ).all()
        for customer in inactive:
            (plan.blocked if customer.legal_hold or customer.restricted else plan.erase).append(customer.customer_id)
        erased = set(plan.erase)
        for consent in granted:
            purpose = self._registry.get(consent.purpose)
            if consent.customer_id in erased or purpose is None:
                continue
            if consent.update_time < now - dt.timedelta(days=purpose.retention_days):
                plan.lapse.append((consent.customer_id, consent.purpose, consent.scope))
        return plan

    def run(self) -> RetentionPlan:
        plan = self.plan()
        for customer_id in plan.erase:
            self._shredder.shred(SYSTEM, customer_id)
        for customer_id, purpose, scope in plan.lapse:
            request = ConsentRequest(purpose=purpose, scope=ConsentScope(scope), channel=Channel.SYSTEM)
            self._consents.withdraw(SYSTEM, customer_id, request, all_scopes=False)
        return plan
