"""Opaque cursors and request-id keys, shared by every list and every idempotent write."""

from __future__ import annotations

import pytest

from vault import cursors
from vault.crypto import Mac, SecretKey
from vault.errors import InvalidArgument
from vault.idempotency import MAX_REQUEST_ID, request_key


def digits(text: str) -> bool:
    return text.isdigit()


def test_a_cursor_round_trips_and_is_refused_by_another_list() -> None:
    token = cursors.encode("h1:", "42")
    assert cursors.decode(token, "h1:", digits, "page_token", "rule") == "42"
    for bad in (cursors.encode("c1:", "42"), cursors.encode("h1:", "x"), "%%%", "aDE6NDI"):
        with pytest.raises(InvalidArgument) as caught:
            cursors.decode(bad, "h1:", digits, "page_token", "must be a next_page_token")
        assert caught.value.violations[0].field == "page_token"


def test_request_keys_are_per_principal_and_domain_and_validated() -> None:
    mac = Mac(SecretKey.generate())
    key = request_key(mac, "create-request-id", "pos", "r-1")
    assert key is not None and key == request_key(mac, "create-request-id", "pos", "r-1")
    assert key != request_key(mac, "create-request-id", "crm", "r-1")
    assert key != request_key(mac, "consent-request-id", "pos", "r-1")
    assert request_key(mac, "create-request-id", "pos", "") is None
    for bad in ("x" * (MAX_REQUEST_ID + 1), "请求-1", "r\n1"):
        with pytest.raises(InvalidArgument) as caught:
            request_key(mac, "create-request-id", "pos", bad)
        assert caught.value.violations[0].field == "request_id"
