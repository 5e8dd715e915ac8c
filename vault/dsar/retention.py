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
from functools import partial

from sqlalchemy import Connection, select

from audit.events import Caller
from consent.models import Channel, ConsentRequest, ConsentScope
from consent.purposes import PurposeRegistry
from consent.service import ConsentService
from vault.customers.erasure import CryptoShredder
from vault.errors import FailedPrecondition
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

    def _cutoff(self) -> dt.datetime:
        return self._clock() - dt.timedelta(days=self._inactive_days)

    def plan(self) -> RetentionPlan:
        now = self._clock()
        plan = RetentionPlan()
        cutoff = self._cutoff()
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
            try:
                self._shredder.shred(SYSTEM, customer_id, check=partial(_still_inactive, customer_id, self._cutoff()))
            except FailedPrecondition:
                plan.blocked.append(customer_id)  # changed, held or restricted since the plan: kept, and said so
        plan.erase = [c for c in plan.erase if c not in plan.blocked]
        for customer_id, purpose, scope in plan.lapse:
            request = ConsentRequest(purpose=purpose, scope=ConsentScope(scope), channel=Channel.SYSTEM)
            self._consents.withdraw(SYSTEM, customer_id, request, all_scopes=False)
        return plan


def _still_inactive(customer_id: str, cutoff: dt.datetime, connection: Connection) -> None:
    """Inside the erasing transaction: the customer is still inactive, not held and not restricted."""
    row = connection.execute(
        select(CustomerRow.update_time, CustomerRow.legal_hold, CustomerRow.restricted).where(
            CustomerRow.customer_id == customer_id
        )
    ).first()
    if row is not None and (row.legal_hold or row.restricted or row.update_time >= cutoff):
        raise FailedPrecondition("the customer changed since the retention plan was made")
