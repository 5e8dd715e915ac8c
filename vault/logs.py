"""Structured JSON logs that cannot carry personal data.

Redaction is by allow-list, not deny-list: a key that is not known to be safe has its value replaced by
``[redacted]``, so a future ``log.info("...", phone=...)`` fails safe. Exceptions are logged by type name only — their
messages and tracebacks (let alone ``show_locals``) can hold request values.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

SAFE_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "rpc",
        "code",
        "duration_ms",
        "principal",
        "role",
        "request_id",
        "customer_id",
        "error_type",
        "listen",
        "database",
        "key_provider",
        "kek_version",
        "signal",
        "count",
        "workers",
        "migration",
        "peer",
        "erased",
        "blocked",
        "lapsed",
    }
)
REDACTED = "[redacted]"


def redact(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key not in SAFE_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def drop_exception_details(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    info = event_dict.pop("exc_info", None)
    event_dict.pop("stack_info", None)
    if isinstance(info, BaseException):
        event_dict["error_type"] = type(info).__name__
    elif info:
        error = sys.exc_info()[1]
        if error is not None:
            event_dict["error_type"] = type(error).__name__
    return event_dict


def processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_exception_details,
        redact,
        structlog.processors.JSONRenderer(ensure_ascii=True),
    ]


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written. Bound once, the logger would keep writing to a stream that was
    swapped out and closed since (a command run inside a test runner, a CLI runner capturing output)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric if isinstance(numeric, int) else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream or cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
