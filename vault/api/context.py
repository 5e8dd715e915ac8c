"""Per-call context set by the call guard and read by servicers."""

from __future__ import annotations

from contextvars import ContextVar

from audit.events import Caller

current_caller: ContextVar[Caller] = ContextVar("current_caller")
