"""Benchmark only: ``piivault serve`` with audit recording switched off, to measure what auditing costs.

There is deliberately no setting or flag that turns auditing off in piivault itself; this module patches it out for
the benchmark's comparison run. The patch sits at module level so that the spawned worker processes, which import
this module as their main module, are patched too.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.events import AuditDraft
from audit.log import AuditLog
from vault import logs
from vault.api.server import serve
from vault.config import Settings
from vault.storage.db import DriverTransaction


def _record_nothing(self: AuditLog, *drafts: AuditDraft) -> None:
    return None


def _append_nothing(self: AuditLog, transaction: DriverTransaction, items: Sequence[object]) -> None:
    return None


AuditLog.record = _record_nothing  # type: ignore[method-assign]
AuditLog.append = _append_nothing  # type: ignore[method-assign]

if __name__ == "__main__":
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    serve(settings)
