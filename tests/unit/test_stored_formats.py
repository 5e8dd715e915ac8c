"""The bytes piivault encrypts or fingerprints are a stored format: field plaintexts are decrypted years later, and a
re-sent purchase is recognised by comparing its fingerprint with the stored one. They are pinned here, character by
character, so that a faster encoder (or any refactoring) cannot change them unnoticed."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import cast

from vault.crypto import Mac, SecretKey
from vault.customers.models import ExternalRef, encode_field
from vault.purchases.models import Line, PurchaseInput
from vault.purchases.service import PurchaseService
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter

KEY = bytes(range(32))


def test_field_plaintexts_keep_their_format() -> None:
    assert encode_field("attributes", {"会员": "金卡", "a": 'x"y'}) == '{"a":"x\\"y","会员":"金卡"}'.encode()
    refs = (ExternalRef("pos", "门店-1"), ExternalRef("web", "W1"))
    assert encode_field("external_refs", refs) == '[["pos","门店-1"],["web","W1"]]'.encode()
    assert encode_field("name", "张三") == "张三".encode()


def test_a_purchase_fingerprint_keeps_its_format() -> None:
    purchase = PurchaseInput(
        source="pos",
        order_id="O-1",
        purchase_time=dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        amount_minor=12850,
        currency="CNY",
        store_id="上海-1",
        lines=(Line("茶", 2, 6425),),
    )
    assert purchase.lines_json() == '[["\\u8336",2,6425]]'
    service = PurchaseService(cast(Database, None), cast(GroupCommitter, None), Mac(SecretKey(KEY)))
    row = service._row("c-1", "p-1", purchase, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    body = (
        '["c-1", "pos", "O-1", "上海-1", "2026-03-01T10:30:00+08:00", 12850, "CNY", '
        '"[[\\"\\\\u8336\\",2,6425]]", "", "", ""]'
    ).encode()
    expected = hmac.new(KEY, b"purchase-body\x00" + body, hashlib.sha256).digest()
    assert row["fingerprint"] == expected
