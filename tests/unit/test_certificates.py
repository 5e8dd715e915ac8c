"""The client-certificate registry: keyed fingerprints only, validation, expiry, revocation and the cache."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from tests.support.certs import TestPki
from tests.support.scan import table_dump
from vault.auth.certificates import FINGERPRINT_DOMAIN, ClientCertificates, certificate_der
from vault.crypto import Mac, SecretKey
from vault.errors import FailedPrecondition, InvalidArgument, NotFound
from vault.storage.db import Database
from vault.storage.models import ClientCertificateRow


class Clocks:
    """A monotonic clock for the cache and a wall clock for validity, both moved by hand."""

    def __init__(self) -> None:
        self.monotonic = 1000.0
        self.wall = dt.datetime.now(dt.UTC)

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += dt.timedelta(seconds=seconds)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def mac() -> Mac:
    return Mac(SecretKey.generate())


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def registry(database: Database, mac: Mac, clocks: Clocks) -> ClientCertificates:
    return ClientCertificates(database, mac, 5.0, clock=lambda: clocks.monotonic, now=lambda: clocks.wall)


def test_only_a_keyed_fingerprint_is_stored(
    registry: ClientCertificates, database: Database, mac: Mac, pki: TestPki
) -> None:
    client = pki.client("till-0042.shop-zhongshan.example")
    info = registry.register(client.cert_pem, "pos-zhongshan", "service")
    assert info.cert_id.startswith("crt_") and len(info.cert_id) == 20
    with database.read() as connection:
        row = connection.execute(select(ClientCertificateRow)).one()
    assert row.fingerprint == mac.digest(FINGERPRINT_DOMAIN, client.der) != client.sha256
    assert (row.cert_id, row.principal, row.role, row.revoke_time) == (info.cert_id, "pos-zhongshan", "service", None)
    assert row.not_after == x509.load_pem_x509_certificate(client.cert_pem).not_valid_after_utc == info.not_after
    dump = table_dump(database.engine)
    body = b"".join(client.cert_pem.split(b"\n")[1:-2])
    for needle in (client.common_name.encode(), b"Piivault Test Shop", client.der, body[:64], client.sha256):
        assert needle not in dump


def test_pem_and_der_authenticate_the_same_principal(registry: ClientCertificates, pki: TestPki) -> None:
    client = pki.client("crm-sync.example")
    info = registry.register(client.cert_pem.decode(), "crm-sync", "support")  # str is accepted as well
    for presented in (client.cert_pem, client.cert_pem.decode(), client.der):
        principal = registry.authenticate(presented)
        assert principal is not None
        assert (principal.name, principal.role, principal.token_id) == ("crm-sync", "support", info.cert_id)
    assert registry.list() == [info]


def test_unknown_or_malformed_certificates_authenticate_nobody(registry: ClientCertificates, pki: TestPki) -> None:
    registry.register(pki.client("known.example").cert_pem, "known", "service")
    assert registry.authenticate(pki.client("stranger.example").cert_pem) is None
    assert registry.authenticate(b"") is None
    assert registry.authenticate(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n") is None


@pytest.mark.parametrize(
    ("principal", "role", "field"),
    [("POS Shanghai", "service", "principal"), ("pos-sh", "root", "role"), ("", "service", "principal")],
)
def test_principal_and_role_are_validated_like_tokens(
    registry: ClientCertificates, pki: TestPki, principal: str, role: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        registry.register(pki.client("x.example").cert_pem, principal, role)
    assert [v.field for v in caught.value.violations] == [field]


def test_anything_but_one_certificate_is_refused(registry: ClientCertificates, pki: TestPki) -> None:
    first, second = pki.client("a.example"), pki.client("b.example")
    refused = [
        b"not a certificate",
        first.cert_pem + second.cert_pem,  # a chain: which one would be meant?
        first.cert_pem + first.key_pem,  # a private key has no business in the vault
        first.key_pem,
        first.der[:-10],
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b"\x30\x03\x02\x01\x01") + b"-----END CERTIFICATE-----\n",
    ]
    for certificate in refused:
        with pytest.raises(InvalidArgument) as caught:
            registry.register(certificate, "pos-sh", "service")
        assert [v.field for v in caught.value.violations] == ["certificate"]
        assert "BEGIN" not in str(caught.value) and "a.example" not in str(caught.value)
    assert registry.list() == []


def test_a_pem_file_with_leading_text_is_read() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
    assert certificate_der(b"subject=CN = x\nissuer=CN = y\n" + pem) == b"\x30\x03\x02\x01\x01"


def test_an_expired_certificate_cannot_be_registered(registry: ClientCertificates, pki: TestPki) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.client("old.example", not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1))
    with pytest.raises(InvalidArgument) as caught:
        registry.register(expired.cert_pem, "old", "service")
    assert caught.value.violations[0].rule == "has expired"


def test_an_entry_does_not_outlive_its_certificate_even_when_cached(
    registry: ClientCertificates, pki: TestPki, clocks: Clocks
) -> None:
    client = pki.client("short.example", not_after=clocks.wall + dt.timedelta(seconds=30))
    registry.register(client.cert_pem, "short-lived", "service")
    clocks.advance(28)
    assert registry.authenticate(client.cert_pem) is not None  # now cached for 5 s
    clocks.advance(3)  # past not_after, still inside the cache TTL
    assert registry.authenticate(client.cert_pem) is None
    assert registry.list()[0].revoke_time is None  # expiry is not revocation; the listing shows when it ends


def test_registering_again_is_refused_even_after_revocation(registry: ClientCertificates, pki: TestPki) -> None:
    client = pki.client("twice.example")
    info = registry.register(client.cert_pem, "twice", "service")
    with pytest.raises(FailedPrecondition):
        registry.register(client.der, "twice-again", "admin")
    registry.revoke(info.cert_id)
    with pytest.raises(FailedPrecondition):
        registry.register(client.cert_pem, "twice", "service")
    assert registry.authenticate(client.cert_pem) is None


def test_revoke_stops_the_certificate_at_once_here_and_within_the_ttl_elsewhere(
    database: Database, mac: Mac, pki: TestPki, clocks: Clocks
) -> None:
    def replica() -> ClientCertificates:
        return ClientCertificates(database, mac, 5.0, clock=lambda: clocks.monotonic, now=lambda: clocks.wall)

    here, elsewhere = replica(), replica()
    client = pki.client("revoked.example")
    info = here.register(client.cert_pem, "pos-revoked", "service")
    assert here.authenticate(client.cert_pem) is not None
    assert elsewhere.authenticate(client.cert_pem) is not None
    here.revoke(info.cert_id)
    assert here.authenticate(client.cert_pem) is None  # the revoking process drops its cache
    assert elsewhere.authenticate(client.cert_pem) is not None  # another replica: still cached ...
    clocks.advance(5.1)
    assert elsewhere.authenticate(client.cert_pem) is None  # ... for at most the TTL
    [listed] = here.list()
    assert listed.revoke_time is not None and listed.cert_id == info.cert_id
    with pytest.raises(NotFound):
        here.revoke(info.cert_id)
    with pytest.raises(NotFound):
        here.revoke("crt_0000000000000000")


def test_a_registration_is_seen_despite_a_cached_refusal(registry: ClientCertificates, pki: TestPki) -> None:
    client = pki.client("late.example")
    assert registry.authenticate(client.cert_pem) is None  # cached as unknown
    registry.register(client.cert_pem, "late", "service")
    assert registry.authenticate(client.cert_pem) is not None
