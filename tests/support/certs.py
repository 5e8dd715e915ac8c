"""A throw-away PKI for TLS tests: one CA, a server certificate for 127.0.0.1/localhost, client certificates.

EC P-256 keys and validity of an hour (or whatever a test asks for), written as PEM files under a test's tmp_path.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes and as files."""

    common_name: str
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA256())


class TestPki:
    """A CA that signs a server certificate and any number of client certificates, all written to ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "Piivault Test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {secrets.token_hex(3)}")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.ca_cert.public_bytes(serialization.Encoding.PEM)
        self.ca_path = directory / f"ca-{secrets.token_hex(3)}.pem"
        self.ca_path.write_bytes(self.ca_pem)

    def server(self, name: str = "server") -> Issued:
        return self._issue(
            name,
            "localhost",
            ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    def client(
        self, common_name: str, *, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
    ) -> Issued:
        return self._issue(
            common_name, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], not_before=not_before, not_after=not_after
        )

    def _issue(
        self,
        file_stem: str,
        common_name: str,
        usage: x509.ObjectIdentifier,
        alt_names: list[x509.GeneralName],
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Piivault Test Shop"),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + _HOUR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        stem = f"{file_stem}-{secrets.token_hex(3)}"
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        return Issued(common_name, cert_pem, key_pem, cert_path, key_path)
