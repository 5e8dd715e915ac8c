from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from vault import logs


def test_unknown_keys_are_redacted_and_records_stay_one_json_line() -> None:
    stream = io.StringIO()
    logs.configure("debug", stream=stream)
    log = structlog.get_logger("test")
    log.info("rpc", rpc="/x", mobile="13800138000", name="张伟", request_id='abc\n{"forged": 1}')
    try:
        raise ValueError("13800138000 is not valid")
    except ValueError:
        log.exception("failed", principal="pos")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["mobile"] == logs.REDACTED and first["name"] == logs.REDACTED
    assert first["rpc"] == "/x" and "forged" not in first
    assert second["error_type"] == "ValueError"
    assert "13800138000" not in stream.getvalue() and "张伟" not in stream.getvalue()
    structlog.reset_defaults()


def test_the_default_stream_is_stderr_as_it_is_at_each_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLI runner swaps sys.stderr and closes its stream afterwards: later lines go to the stderr of their time, and
    a logger cached meanwhile does not fail on the closed stream."""
    logs.configure("info")
    log = structlog.get_logger("test")
    captured = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", captured)
        log.info("while captured")
    captured.close()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    log.info("after")
    assert json.loads(later.getvalue())["event"] == "after"
    structlog.reset_defaults()
