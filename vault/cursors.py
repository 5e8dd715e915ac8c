"""Opaque, versioned cursors for paginated and incremental reads (AIP-158 page tokens, the analytics cursor).

A cursor is base64url of ``<prefix><payload>``; the prefix names the list and its format version, so a token from
one list is refused by another and formats can change. Cursors are not secrets and carry no personal data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from vault.errors import InvalidArgument


def encode(prefix: str, payload: str) -> str:
    return base64.urlsafe_b64encode((prefix + payload).encode()).decode()


def decode(token: str, prefix: str, valid: Callable[[str], bool], field: str, rule: str) -> str:
    """The payload of a cursor made by ``encode(prefix, ...)`` that ``valid`` accepts; else ``InvalidArgument``."""
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    payload = text.removeprefix(prefix)
    if not text.startswith(prefix) or not valid(payload):
        raise InvalidArgument.single(field, rule)
    return payload
