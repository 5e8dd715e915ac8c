"""Request ids (AIP-155): a client-chosen id makes a retried write return the first result instead of repeating it.

The database keeps a keyed digest of (principal, request id) — never the id itself, which a client may have built
from something personal — under a domain per kind of write, so ids never collide across kinds.
"""

from __future__ import annotations

from vault.crypto import Mac
from vault.errors import InvalidArgument

MAX_REQUEST_ID = 128


def request_key(mac: Mac, domain: str, principal: str, request_id: str) -> bytes | None:
    """The stored key of a request id, or None when the request carries none."""
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID or not request_id.isascii() or not request_id.isprintable():
        raise InvalidArgument.single("request_id", f"must be 1-{MAX_REQUEST_ID} printable ASCII characters")
    return mac.digest(domain, f"{principal}\x00{request_id}".encode())
