"""Model stores on loopback for fetch tests: a TLS file server with Range support and injected faults."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
              issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def tls_context(root: Path) -> ssl.SSLContext:
    """A server context for 127.0.0.1 signed by a CA written to ROOT/ca.pem."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("test CA", ca_key, None, ca_key, ca=True)
    leaf = make_cert("127.0.0.1", key, ca.subject, ca_key, ca=False)
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(root / "server.pem")
    return context


@dataclass
class Faults:
    """What the next GETs meet: the first `drops` responses end after `cut` bytes; `stall` seconds of
    silence after `cut` bytes; `ranges` False ignores Range headers; `pace` seconds between 64 KiB chunks."""

    drops: int = 0
    cut: int = 0
    stall: float = 0.0
    ranges: bool = True
    pace: float = 0.0
    seen_ranges: list[str] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        faults: Faults = self.server.faults
        path = self.server.root / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            faults.seen_ranges.append(match.group(0))
            if faults.ranges:
                start, status = int(match.group(1)), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self._send(data[start:], faults)

    def _send(self, body: bytes, faults: Faults) -> None:
        cut = faults.cut if faults.drops or faults.stall else len(body)
        for i in range(0, min(cut, len(body)), 1 << 16):
            self.wfile.write(body[i:min(i + (1 << 16), cut)])
            self.wfile.flush()
            time.sleep(faults.pace)
        if faults.stall:
            time.sleep(faults.stall)
        if faults.drops:
            faults.drops -= 1
            self.close_connection = True
            return
        self.wfile.write(body[cut:])


class FileStore:
    """Serves ROOT over https on 127.0.0.1 with the faults in `self.faults`."""

    def __init__(self, root: Path, tls_root: Path) -> None:
        self.root, self.faults = root, Faults()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = tls_context(tls_root).wrap_socket(self.httpd.socket, server_side=True)
        setattr(self.httpd, "root", root)  # noqa: B010 - read by the handler
        setattr(self.httpd, "faults", self.faults)  # noqa: B010
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.ca = tls_root / "ca.pem"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self, faults: Faults) -> None:
        self.faults = faults
        setattr(self.httpd, "faults", faults)  # noqa: B010

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
