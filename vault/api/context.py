"""Per-call context set by the call guard and read by servicers."""

from __future__ import annotations

from contextvars import ContextVar

from vault.auth.tokens import Principal

current_principal: ContextVar[Principal] = ContextVar("current_principal")
