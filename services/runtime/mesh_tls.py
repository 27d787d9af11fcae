"""Mutual TLS between the components: settings, credentials, and the caller's identity.

Every gRPC hop is mutual TLS (docs/security.md). A process presents the certificate of its
own identity (``CCBRIDGE_TLS_CERT``/``CCBRIDGE_TLS_KEY``) and trusts the mesh CA
(``CCBRIDGE_TLS_CA``) for its peers. The identity is the certificate's URI SAN
``spiffe://ccbridge/<identity>``: one of the five components, or ``operator`` (the
``ccbridge`` CLI's admin commands). Servers authorize on it (services/runtime/authz.py);
clients check that the server's certificate carries the DNS SAN of the component they
mean to reach, whatever address they dialled.

Rotation: a server reads the files again on the next handshake after they change (grpc's
dynamic server credentials; a new key and certificate are checked to match before use),
client channels re-create their connection with the new files
(services/runtime/channels.py). Without the paths a process does not start, unless
``CCBRIDGE_MESH_INSECURE=true`` (development only: plaintext, every caller allowed,
logged as a warning by every server and channel).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ccbridge.services.runtime.authz import CONNECTOR, GATEWAY, HISTORY, OPERATOR, ROUTING, SESSION

log = logging.getLogger(__name__)

SPIFFE_PREFIX = "spiffe://ccbridge/"
COMPONENTS = (GATEWAY, SESSION, HISTORY, ROUTING, CONNECTOR)
IDENTITIES = (*COMPONENTS, OPERATOR)
INSECURE_WARNING = (
    "mesh TLS is OFF (CCBRIDGE_MESH_INSECURE=true): gRPC is plaintext and any caller that "
    "reaches the port may call every RPC; never run this way outside development"
)


@dataclass(frozen=True)
class MeshTls:
    """Where this process's mesh certificate, key and CA are (or that the mesh is
    plaintext: ``insecure``)."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    insecure: bool = False

    @property
    def paths(self) -> tuple[str, str, str]:
        return (self.cert, self.key, self.ca)


# What tests that build settings objects directly (not from the environment) get; the
# environment has no such default (services/runtime/settings.py).
INSECURE = MeshTls(insecure=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _stamp(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    # Kubernetes swaps a mounted Secret's files through a symlink: stat follows it.
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in (os.stat(p) for p in paths))


@dataclass(frozen=True)
class KeyMaterial:
    """One consistent read of the certificate chain, key and CA."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, tls: MeshTls) -> KeyMaterial:
        """Reads the three files; raises ``OSError``/``ssl.SSLError`` when they are missing
        or the key does not match the certificate (a rotation caught half-written)."""
        before = _stamp(tls.paths)
        material = cls(_read(tls.cert), _read(tls.key), _read(tls.ca))
        ssl.create_default_context().load_cert_chain(tls.cert, tls.key)
        ssl.create_default_context(cadata=material.ca.decode("ascii"))
        if _stamp(tls.paths) != before:
            raise OSError("the certificate files changed while being read")
        return material


class Watched:
    """The key material of ``tls`` and whether the files changed since it was read."""

    def __init__(self, tls: MeshTls) -> None:
        self.tls = tls
        self._stamp = _stamp(tls.paths)
        self.material = KeyMaterial.load(tls)

    def refresh(self) -> bool:
        """Reads the files again when they changed; True when new material was taken.
        A half-written or unreadable rotation keeps the material in use (and is
        retried on the next call)."""
        try:
            stamp = _stamp(self.tls.paths)
            if stamp == self._stamp:
                return False
            material = KeyMaterial.load(self.tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("mesh certificate not reloaded: %s", type(exc).__name__)
            return False
        self._stamp, self.material = stamp, material
        log.info("mesh certificate reloaded from %s", self.tls.cert)
        return True


def _server_config(material: KeyMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


def server_credentials(tls: MeshTls) -> grpc.ServerCredentials:
    """Mutual TLS server credentials that take rotated files on the next handshake; a
    client without a certificate of the mesh CA cannot complete the handshake."""
    watched = Watched(tls)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # grpc calls this for every new connection; None keeps the configuration.
        return _server_config(watched.material) if watched.refresh() else None

    return grpc.dynamic_ssl_server_credentials(
        _server_config(watched.material),
        fetch,  # type: ignore[arg-type]  # grpc documents None; typeshed's stub omits it
        require_client_authentication=True,
    )


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> str | None:
    """The mesh identity of the caller: its certificate's ``spiffe://ccbridge/<name>``
    URI SAN (None over plaintext, or for a certificate without one)."""
    auth = context.auth_context()
    for raw in auth.get("peer_uri", ()) or ():
        uri = raw.decode("utf-8", "replace")
        if uri.startswith(SPIFFE_PREFIX):
            return uri.removeprefix(SPIFFE_PREFIX)
    return None
