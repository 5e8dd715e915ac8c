from __future__ import annotations

import io
import json

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
