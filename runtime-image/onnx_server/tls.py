"""TLS on the serving ports, with the certificate rotated without a restart and without a dropped connection.

The files are polled (a mounted Secret changes when the kubelet swaps its `..data` symlink; cert-manager's
renewal lands that way). A change is loaded only when the certificate, key and CA read before and after
building a new context are the same bytes and the context builds (a half-swapped pair, or a key that does
not match, keeps the previous certificate and is retried on the next poll):

- **REST**: uvicorn's listening context (built once at config.load()) gets an SNI callback that hands every
  new handshake the newest context (`SSLObject.context = ...`, which OpenSSL switches per connection).
  Open connections keep the session they have; nothing is closed.
- **gRPC**: `grpc.dynamic_ssl_server_credentials`, whose fetcher gRPC core calls before each new handshake;
  it returns the new configuration once, after a change, and None (keep the current one) otherwise.

Client certificates: `require` verifies and demands one on both protocols. `optional` verifies one if the
client sends it on REST (ssl.CERT_OPTIONAL); gRPC core has no "optional" for these credentials, so gRPC then
requests none (the server authorizes nobody by certificate, so nothing is lost by not asking).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc

from onnx_server.errors import InvalidArgument

LOG = logging.getLogger("onnx_server")
ClientAuth = Literal["none", "optional", "require"]
VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the serving certificate (its chain), its key and, for client certificates, their CA."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    client_auth: ClientAuth = "none"

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        return (self.cert.read_bytes(), self.key.read_bytes(),
                self.client_ca.read_bytes() if self.client_ca is not None else None)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A TLS 1.2+ server context of the files as they are now (ssl.SSLError/OSError if they do not fit)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    if files.client_auth != "none":
        assert files.client_ca is not None
        ctx.load_verify_locations(cafile=files.client_ca)
    ctx.verify_mode = VERIFY_MODES[files.client_auth]
    return ctx


def reloader_for(cert: Path | None, key: Path | None, client_ca: Path | None,
                 client_auth: ClientAuth) -> CertificateReloader | None:
    """The reloader of the serve command's --tls-* flags (None without --tls-cert); InvalidArgument if they
    do not fit together or the files do not load."""
    if cert is None and key is None:
        if client_ca is not None or client_auth != "none":
            raise InvalidArgument("--tls-client-ca and --tls-client-auth need --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise InvalidArgument("--tls-cert and --tls-key go together")
    return CertificateReloader(TlsFiles(cert, key, client_ca, client_auth))


class CertificateReloader:
    """The serving certificate as the files hold it, for both protocols; `check()` picks up a change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        if files.client_auth != "none" and files.client_ca is None:
            raise InvalidArgument(f"--tls-client-auth {files.client_auth} needs --tls-client-ca")
        try:
            loaded = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(f"TLS files unusable (--tls-cert {files.cert}, --tls-key {files.key}"
                                  f"{f', --tls-client-ca {files.client_ca}' if files.client_ca else ''}): {exc}") \
                from exc
        if loaded is None:
            raise InvalidArgument(f"TLS files changed while being read: {files.cert}, {files.key}")
        self.pems, self.context = loaded
        self.reloads = 0
        self._grpc_pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # gRPC core calls the fetcher from its own threads

    def _load(self) -> tuple[tuple[bytes, bytes, bytes | None], ssl.SSLContext] | None:
        before = self.files.read()
        ctx = server_context(self.files)
        return (before, ctx) if self.files.read() == before else None

    def check(self) -> bool:
        """Loads the files if they changed and fit together; True when new handshakes now use them."""
        try:
            if self.files.read() == self.pems:
                return False
            loaded = self._load()
        except (OSError, ssl.SSLError) as exc:
            LOG.warning("Kept the current TLS certificate: the files did not load (%s); retrying", exc)
            return False
        if loaded is None:
            return False  # changed under us (a symlink swap in progress): the next poll sees it whole
        with self._lock:
            self.pems, self.context = loaded
            self._grpc_pending = self.grpc_configuration()
            self.reloads += 1
        LOG.info("Loaded a new TLS certificate from %s for new connections (reload %d)", self.files.cert,
                 self.reloads)
        return True

    # REST
    def listening_context(self) -> ssl.SSLContext:
        """The context to listen with: it hands each new handshake the newest context."""
        listening = self.context

        def pick(sslobj: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
            current = self.context
            if sslobj.context is not current:
                sslobj.context = current
        listening.sni_callback = pick
        return listening

    # gRPC
    def grpc_configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = self.pems
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.grpc_configuration(), self._grpc_fetch,
                                                   require_client_authentication=self.files.client_auth == "require")

    def _grpc_fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._grpc_pending = self._grpc_pending, None
        return pending

    async def poll(self, interval: float) -> None:
        """Checks the files every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # a poll must never end: the current certificate keeps serving
                LOG.exception("Failed to check the TLS files")
