"""TLS on onnx-server's REST and gRPC ports (--tls-cert/--tls-key, client certificates, the plain health port)
and the certificate rotated under live traffic, checked with tritonclient and plain ssl sockets."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from localcluster.harness import wait_for
from localcluster.models import make_model
from localcluster.prober import Prober
from tests.runtime.conftest import ServerProcess, model_dir
from tests.runtime.test_server import X, expected
from tests.runtime.tls_files import Pki, SecretVolume, fingerprint, presented_certificate

RELOAD = 0.5  # seconds between checks of the TLS files in these tests (default 5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA the servers do not trust: its client certificates must be refused."""
    return Pki(tmp_path_factory.mktemp("other"), "other-ca")


def tls_args(pki: Pki, *extra: str) -> tuple[str, ...]:
    pair = pki.serving("server")
    return ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key), *extra)


def start(tmp: Path, *args: str) -> ServerProcess:
    return ServerProcess(model_dir(tmp, make_model()), *args, health=True)


@pytest.fixture(scope="module")
def serve_tls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Callable[..., ServerProcess]]:
    """Starts TLS servers with extra flags; stops them all at the module's end."""
    started: list[ServerProcess] = []

    def serve(name: str, *extra: str) -> ServerProcess:
        started.append(start(tmp_path_factory.mktemp(name), *tls_args(pki, *extra)))
        return started[-1]
    yield serve
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def tls_server(serve_tls: Callable[..., ServerProcess]) -> ServerProcess:
    return serve_tls("tls")


@pytest.fixture(scope="module")
def mtls_server(serve_tls: Callable[..., ServerProcess], pki: Pki) -> ServerProcess:
    return serve_tls("mtls", "--tls-client-ca", str(pki.ca.cert), "--tls-client-auth", "require")


@pytest.fixture(scope="module")
def optional_server(serve_tls: Callable[..., ServerProcess], pki: Pki) -> ServerProcess:
    return serve_tls("opt", "--tls-client-ca", str(pki.ca.cert), "--tls-client-auth", "optional")


def http_client(srv: ServerProcess, pki: Pki, client: Pki | None = None) -> httpclient.InferenceServerClient:
    options = {"ca_certs": str(pki.ca.cert)}
    if client is not None:
        pair = client.client()
        options.update(certfile=str(pair.cert), keyfile=str(pair.key))
    return httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}", ssl=True, ssl_options=options,
                                            connection_timeout=5, network_timeout=5)


def grpc_client(srv: ServerProcess, pki: Pki, client: Pki | None = None) -> grpcclient.InferenceServerClient:
    pair = client.client() if client is not None else None
    return grpcclient.InferenceServerClient(
        srv.grpc_target, ssl=True, root_certificates=str(pki.ca.cert),
        private_key=str(pair.key) if pair else None, certificate_chain=str(pair.cert) if pair else None)


def infer(client: httpclient.InferenceServerClient | grpcclient.InferenceServerClient) -> np.ndarray:
    module = httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient
    tensor = module.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32))
    result = client.infer("linear", [tensor], **({"client_timeout": 5} if module is grpcclient else {}))
    out = result.as_numpy("y")
    assert out is not None
    return out


def assert_answers(client: httpclient.InferenceServerClient | grpcclient.InferenceServerClient) -> None:
    """The client's inference matches onnxruntime; the client is closed either way."""
    try:
        np.testing.assert_allclose(infer(client), expected(X), rtol=1e-6)
    finally:
        client.close()


def test_https_inference_with_tritonclient_http_matches_onnxruntime(tls_server: ServerProcess, pki: Pki) -> None:
    assert_answers(http_client(tls_server, pki))


def test_grpc_tls_inference_with_tritonclient_grpc_matches_onnxruntime(tls_server: ServerProcess, pki: Pki) -> None:
    assert_answers(grpc_client(tls_server, pki))


def test_a_client_without_the_ca_is_refused_on_both_ports(tls_server: ServerProcess, other_pki: Pki) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.url}/v2/health/ready", verify=ssl.create_default_context(), timeout=5)
    client = grpc_client(tls_server, other_pki)
    try:
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            infer(client)
    finally:
        client.close()


def test_plain_http_to_the_tls_port_fails_fast(tls_server: ServerProcess) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/v2/health/ready", timeout=10)
    assert time.monotonic() - started < 2


def test_h2c_to_the_tls_grpc_port_fails_fast(tls_server: ServerProcess) -> None:
    started = time.monotonic()
    with grpc.insecure_channel(tls_server.grpc_target) as channel, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=3)
    # the channel keeps retrying within its deadline; each attempt's TLS mismatch is refused, none hangs open
    assert time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", tls_server.grpc_port or 0), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(1024) == b""  # closed by the server, not left hanging


def test_the_health_port_answers_plain_http_without_a_client_certificate(mtls_server: ServerProcess) -> None:
    assert httpx.get(f"{mtls_server.health_url}/v2/health/live", timeout=5).json() == {"live": True}
    assert httpx.get(f"{mtls_server.health_url}/v2/health/ready", timeout=5).status_code == 200
    metrics = httpx.get(f"{mtls_server.health_url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "onnx_server" in metrics.text
    # only health and metrics: inference stays behind TLS
    assert httpx.post(f"{mtls_server.health_url}/v2/models/linear/infer", json={}, timeout=5).status_code == 404


def test_require_refuses_a_client_without_a_certificate(mtls_server: ServerProcess, pki: Pki) -> None:
    rest = http_client(mtls_server, pki)
    try:
        with pytest.raises(Exception, match=r"(?i)certificate|alert|reset|closed|EOF"):
            infer(rest)
    finally:
        rest.close()
    client = grpc_client(mtls_server, pki)
    try:
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            infer(client)
    finally:
        client.close()


def test_require_refuses_a_certificate_from_another_ca(mtls_server: ServerProcess, pki: Pki,
                                                       other_pki: Pki) -> None:
    pair = other_pki.client("stranger")
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(pair.cert, pair.key)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{mtls_server.url}/v2/health/ready", verify=ctx, timeout=5).raise_for_status()


def test_require_answers_a_client_with_a_certificate(mtls_server: ServerProcess, pki: Pki) -> None:
    assert_answers(http_client(mtls_server, pki, pki))
    assert_answers(grpc_client(mtls_server, pki, pki))


def test_optional_answers_without_a_certificate_and_verifies_one_that_is_sent(
        optional_server: ServerProcess, pki: Pki, other_pki: Pki) -> None:
    ca = ssl.create_default_context(cafile=str(pki.ca.cert))
    assert httpx.get(f"{optional_server.url}/v2/health/ready", verify=ca, timeout=5).status_code == 200
    stranger = other_pki.client("stranger")
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(stranger.cert, stranger.key)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{optional_server.url}/v2/health/ready", verify=ctx, timeout=5).raise_for_status()
    assert_answers(grpc_client(optional_server, pki))


def test_tls_flags_that_do_not_fit_exit_with_a_message(tmp_path: Path, pki: Pki) -> None:
    import subprocess
    import sys
    folder = model_dir(tmp_path, make_model())
    base = [sys.executable, "-m", "onnx_server.cli", "serve", "--model-dir", str(folder), "--name", "m",
            "--version", "1", "--port", "0", "--no-grpc"]
    pair = pki.serving("server")
    for extra, text in ((["--tls-cert", str(pair.cert)], "--tls-cert and --tls-key go together"),
                        (["--tls-cert", str(pair.cert), "--tls-key", str(pki.ca.key)], "TLS files unusable"),
                        (["--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--tls-client-auth", "require"],
                         "needs --tls-client-ca")):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and text in done.stdout, (extra, done.stdout, done.stderr)


@pytest.fixture()
def rotating(tmp_path: Path, pki: Pki) -> Iterator[tuple[ServerProcess, SecretVolume]]:
    """A server reading its certificate from a kubelet-style Secret volume, connections aged 1 s so that
    keep-alive and gRPC clients open new connections (new handshakes) all through a test."""
    volume = SecretVolume(tmp_path / "secret")
    volume.write(pki.secret("first"))
    srv = start(tmp_path / "srv", "--tls-cert", str(volume.path("tls.crt")), "--tls-key", str(volume.path("tls.key")),
                "--tls-reload-seconds", str(RELOAD), "--max-connection-age", "1")
    yield srv, volume
    srv.stop()


def test_a_replaced_certificate_is_presented_to_new_connections_and_no_request_is_lost(
        rotating: tuple[ServerProcess, SecretVolume], pki: Pki) -> None:
    srv, volume = rotating
    ca = pki.ca.cert
    first, second = fingerprint(pki.serving("first").cert.read_bytes()), fingerprint(
        pki.serving("second").cert.read_bytes())
    assert presented_certificate("127.0.0.1", srv.port, ca) == first
    assert presented_certificate("127.0.0.1", srv.grpc_port or 0, ca, ("h2",)) == first
    probers = [Prober(srv.url, "linear", rate=40, max_seconds=30, timeout=5, client=kind, workers=workers,
                      grpc_target=srv.grpc_target, ca_file=str(ca))
               for kind, workers in (("pooled", 3), ("triton-http", 1), ("triton-grpc", 2))]
    for prober in probers:
        prober.start()
    try:
        wait_for("the probers' first answers", lambda: all(p.report().total >= 10 for p in probers), timeout=10)
        swapped = time.monotonic()
        volume.write(pki.secret("second"))
        wait_for("the new certificate on new REST connections",
                 lambda: presented_certificate("127.0.0.1", srv.port, ca) == second, timeout=RELOAD + 5,
                 interval=0.05)
        rest_after = time.monotonic() - swapped
        wait_for("the new certificate on new gRPC connections",
                 lambda: presented_certificate("127.0.0.1", srv.grpc_port or 0, ca, ("h2",)) == second,
                 timeout=RELOAD + 5, interval=0.05)
        grpc_after = time.monotonic() - swapped
        before = [p.report().total for p in probers]
        # traffic keeps going across several connection ages (1 s) on the new certificate
        wait_for("4 s more of answers",
                 lambda: all(p.report().total >= b + 160 for p, b in zip(probers, before, strict=True)), timeout=20)
    finally:
        reports = [p.stop() for p in probers]
    print(f"new certificate presented after {rest_after:.2f}s (REST), {grpc_after:.2f}s (gRPC); "
          f"requests: {[r.total for r in reports]}")
    assert rest_after <= RELOAD + 1 and grpc_after <= RELOAD + 1
    for report in reports:
        assert report.total >= 170 and report.failed == 0, report.describe_failures()
    assert "Loaded a new TLS certificate" in srv.log.read_text()


def test_a_broken_replacement_keeps_the_current_certificate(rotating: tuple[ServerProcess, SecretVolume],
                                                           pki: Pki, other_pki: Pki) -> None:
    srv, volume = rotating
    ca = pki.ca.cert
    first = fingerprint(pki.serving("first").cert.read_bytes())
    mismatched = {**pki.secret("second"), "tls.key": other_pki.serving("x").key.read_bytes()}
    volume.write(mismatched)
    wait_for("the refused reload in the log", lambda: "Kept the current TLS certificate" in srv.log.read_text(),
             timeout=RELOAD + 5)
    assert presented_certificate("127.0.0.1", srv.port, ca) == first
    assert presented_certificate("127.0.0.1", srv.grpc_port or 0, ca, ("h2",)) == first
    assert_answers(grpc_client(srv, pki))
