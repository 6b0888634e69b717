"""Certificates for TLS tests, and a folder laid out like a kubelet's Secret volume (files are symlinks through
`..data`, which is swapped atomically to a new timestamped folder on every update)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path

from localcluster.pki import KeyPair, issue, make_ca


class SecretVolume:
    """`<root>/tls.crt -> ..data/tls.crt`, `..data -> ..<n>`: what a pod sees of a mounted Secret."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    def path(self, key: str) -> Path:
        return self.root / key

    def write(self, files: dict[str, bytes]) -> None:
        """Puts the new contents in place in one rename, as the kubelet's AtomicWriter does."""
        self.generation += 1
        folder = self.root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self.generation}"
        folder.mkdir()
        for key, data in files.items():
            (folder / key).write_bytes(data)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        os.replace(tmp, self.root / "..data")
        for key in files:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")


class Pki:
    """A CA with serving certificates for 127.0.0.1 (each `serving(name)` a new key and serial) and a client
    certificate."""

    def __init__(self, root: Path, name: str = "ca") -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(self.root)

    def serving(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> KeyPair:
        return issue(self.root, self.ca, name, "onnx-server", server_names=hosts)

    def client(self, name: str = "client") -> KeyPair:
        return issue(self.root, self.ca, name, name)

    def secret(self, name: str) -> dict[str, bytes]:
        """A kubernetes.io/tls Secret's keys as cert-manager writes them."""
        pair = self.serving(name)
        return {"tls.crt": pair.cert.read_bytes(), "tls.key": pair.key.read_bytes(),
                "ca.crt": self.ca.cert.read_bytes()}


def fingerprint(pem_or_der: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode()) if pem_or_der.startswith(b"-----") else pem_or_der
    return hashlib.sha256(der).hexdigest()


def presented_certificate(host: str, port: int, cafile: Path, alpn: tuple[str, ...] = ()) -> str:
    """The fingerprint of the certificate a NEW connection to host:port is shown (ALPN h2 for gRPC)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)
