"""A throwaway certificate authority for local runs (``ccbridge up``, the tests' mesh):
one CA and one certificate per mesh identity, so local runs use mutual TLS exactly as
production does (docs/security.md).

Each certificate names its identity as the URI SAN ``spiffe://ccbridge/<identity>`` (what
servers authorize on, services/runtime/mesh_tls.py), the DNS SAN ``<identity>`` (what
clients check a server against) and ``localhost``/``127.0.0.1``. Private keys are written
with mode 0600; nothing here is meant to outlive the local run's data folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccbridge.services.runtime.mesh_tls import IDENTITIES, SPIFFE_PREFIX

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class IssuedCert:
    """Paths of one identity's certificate chain and key, and of the CA that signed it."""

    cert: Path
    key: Path
    ca: Path

    def env(self) -> dict[str, str]:
        """The settings that make a process use this certificate."""
        return {
            "CCBRIDGE_TLS_CERT": str(self.cert),
            "CCBRIDGE_TLS_KEY": str(self.key),
            "CCBRIDGE_TLS_CA": str(self.ca),
        }


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (never world-readable, not even briefly).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class MeshCa:
    """A CA whose key stays in ``folder``; :meth:`issue` signs identities' certificates."""

    folder: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def ca_path(self) -> Path:
        return self.folder / "ca.crt"

    @classmethod
    def create(cls, folder: Path) -> MeshCa:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccbridge local CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
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
            .sign(key, hashes.SHA256())
        )
        _write_private(folder / "ca.key", _key_pem(key))
        (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, cert, key)

    @classmethod
    def load(cls, folder: Path) -> MeshCa:
        """The CA that :meth:`create` left in ``folder``."""
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / 'ca.key'} is not the CA key this module writes")
        return cls(folder, cert, key)

    def issue(
        self,
        identity: str,
        *,
        dns_names: Iterable[str] = ("localhost",),
        name: str | None = None,
        valid_for: datetime.timedelta = _VALIDITY,
        spiffe: bool = True,
    ) -> IssuedCert:
        """Signs a certificate for ``identity`` and writes ``<name>.crt``/``<name>.key``
        (``name`` defaults to the identity; a rotation writes the same paths again).
        ``spiffe=False`` leaves out the identity's URI SAN (tests)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [
            *([x509.UniformResourceIdentifier(SPIFFE_PREFIX + identity)] if spiffe else []),
            x509.DNSName(identity),
            *(x509.DNSName(host) for host in dns_names),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = name or identity
        cert_path = self.folder / f"{stem}.crt"
        key_path = self.folder / f"{stem}.key"
        # Key first: a reader that sees the new certificate also finds its key.
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return IssuedCert(cert_path, key_path, self.ca_path)


def create_mesh_pki(folder: Path) -> Mapping[str, IssuedCert]:
    """A new CA in ``folder`` and a certificate for every mesh identity (the five
    components and ``operator``, the ``ccbridge`` CLI's admin commands)."""
    ca = MeshCa.create(folder)
    return {identity: ca.issue(identity) for identity in IDENTITIES}
