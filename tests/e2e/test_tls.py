"""spec.tls on the real node: REST and gRPC over TLS through the Service (certificates made here with the
Service's ClusterIP and DNS names), client certificates, a renewed Secret picked up by the pods under live
traffic, a missing or incomplete Secret as a condition, and readiness and Prometheus' scrapes (what the
metric gates read) on the plain health port in every TLS mode."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx_operator.api import parse_model_version
from onnx_operator.api.modeldeployment import Analysis
from onnx_operator.handlers.gates import read_gates
from tritonclient.utils import InferenceServerException

from localcluster.harness import ClusterHandle, wait_for
from localcluster.prober import CLIENTS, DEFAULT_BODY, ClientMix, Prober
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import (
    condition,
    get,
    model_deployment,
    model_version,
    service_url,
    wait_mv_phase,
    wait_ready,
    wait_service_answers,
)
from tests.prometheus import Prometheus, kubernetes_sd_scrape_config
from tests.runtime.test_tls import assert_answers, infer
from tests.runtime.tls_files import Pki, fingerprint, presented_certificate

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
GRPC_PORT = 8081
AGE = 2  # spec.runtime.maxConnectionAgeSeconds: keep-alive and gRPC clients open new connections this often
# the kubelet refreshes a mounted Secret at its next pod sync (syncFrequency 1 min, plus its cache's TTL and
# jitter: ~60-90 s), then onnx-server sees the files within --tls-reload-seconds (5 s)
ROTATION_BOUND = 180.0


def tls_secret(name: str, files: dict[str, bytes], type_: str = "kubernetes.io/tls") -> str:
    """(the API server itself refuses a kubernetes.io/tls Secret without tls.crt and tls.key: an incomplete one
    is Opaque)"""
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": type_,
                       "data": {k: base64.b64encode(v).decode() for k, v in files.items()}})


def wait_rolled(cluster: ClusterHandle, ns: str, md: str, has_arg: str | None, timeout: float = 240) -> None:
    """Every serving pod runs the Deployment's current template (with `has_arg` among its arguments, or
    without --tls-cert when None) and is Ready, and no other pod is left."""
    def done() -> bool:
        pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", f"serving.onnx-operator.io/deployment={md}")
        live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
        if not live or len(live) != len(pods["items"]):
            return False
        for pod in live:
            args = pod["spec"]["containers"][0]["args"]
            if (has_arg not in args) if has_arg else ("--tls-cert" in args):
                return False
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])):
                return False
        return True
    wait_for(f"{md}'s pods rolled ({has_arg or 'plain'}) and Ready", done, timeout=timeout, interval=1)


@dataclass
class TlsWeb:
    """`web` (2 pods on the real node) serving over TLS with Secret `web-tls`; its Service's address."""

    cluster: ClusterHandle
    namespace: str
    ip: str
    pki: Pki
    prometheus: Prometheus

    @property
    def url(self) -> str:
        return f"https://{self.ip}:80"  # the Service's `http` port, now speaking TLS

    def secret(self, name: str) -> dict[str, bytes]:
        ns = self.namespace
        hosts = (self.ip, "web", f"web.{ns}", f"web.{ns}.svc", f"web.{ns}.svc.cluster.local")
        pair = self.pki.serving(name, hosts)
        return {"tls.crt": pair.cert.read_bytes(), "tls.key": pair.key.read_bytes(),
                "ca.crt": self.pki.ca.cert.read_bytes()}

    def client_files(self) -> tuple[str, str]:
        pair = self.pki.client()
        return str(pair.cert), str(pair.key)

    def http(self, client_cert: bool = False) -> httpclient.InferenceServerClient:
        options = {"ca_certs": str(self.pki.ca.cert)}
        if client_cert:
            options.update(zip(("certfile", "keyfile"), self.client_files(), strict=True))
        return httpclient.InferenceServerClient(f"{self.ip}:80", ssl=True,
                                                ssl_options=options, connection_timeout=10, network_timeout=10)

    def grpc(self, client_cert: bool = False, ca: Path | None = None) -> grpcclient.InferenceServerClient:
        cert, key = self.client_files() if client_cert else (None, None)
        return grpcclient.InferenceServerClient(f"{self.ip}:{GRPC_PORT}", ssl=True,
                                                root_certificates=str(ca or self.pki.ca.cert),
                                                private_key=key, certificate_chain=cert)

    def pod_ips(self) -> list[str]:
        pods = self.cluster.kubectl_json("get", "pods", "-n", self.namespace, "-l",
                                         "serving.onnx-operator.io/deployment=web")["items"]
        return [p["status"]["podIP"] for p in pods if not p["metadata"].get("deletionTimestamp")]

    def gates_judged(self) -> None:
        """Prometheus scraped the TLS pods (through their health port) and a success-rate gate is judged
        from what it scraped: the data the rollout gates need is there."""
        mv = parse_model_version(get(self.cluster, "mv", self.namespace, "v1"))
        up = wait_for("every TLS pod scraped (up == 1)", lambda: (r := self.prometheus.query(
            f'up{{job="onnx-serving",namespace="{self.namespace}"}} == 1')) and len(r) == 2 and r, timeout=60)
        assert all(t["metric"]["instance"].endswith(":8082") for t in up), up
        gates = wait_for("a gate judged from the TLS pods' metrics", lambda: [g for g in read_gates(
            self.prometheus.url, Analysis(successRate=0.95, minRequests=5), mv, "web") if not g.inconclusive],
            timeout=60)
        assert gates[0].passed, gates


@pytest.fixture(scope="module")
def tls_web(cluster: ClusterHandle, models: ModelStore, prometheus_bin: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWeb]:
    """`web` first serves plain HTTP (its Service gets its ClusterIP), then the certificate is made for that
    IP and the Service's DNS names, and spec.tls turns TLS on."""
    ns = f"tls-{int(time.time())}"
    cluster.create_namespace(ns)
    root = tmp_path_factory.mktemp("tls-e2e")
    prom = Prometheus(root / "prom", [kubernetes_sd_scrape_config(Path(cluster.kubeconfig), [ns])],
                      binary=str(prometheus_bin))
    try:
        cluster.apply(model_version("v1", models.model("tls-1.onnx")), ns)
        wait_mv_phase(cluster, ns, "v1", "Ready")
        runtime = {"runtime": {"maxConnectionAgeSeconds": AGE}}
        cluster.apply(model_deployment("web", "v1", replicas=2, kwok=False, **runtime), ns)
        wait_ready(cluster, ns, "web", timeout=240)
        ip = service_url(cluster, ns, "web").removeprefix("http://")
        web = TlsWeb(cluster, ns, ip, Pki(root), prom)
        cluster.apply(tls_secret("web-tls", web.secret("first")), ns)
        cluster.apply(model_deployment("web", "v1", replicas=2, kwok=False, tls={"secretName": "web-tls"},
                                       **runtime), ns)
        wait_rolled(cluster, ns, "web", "--tls-cert")
        wait_ready(cluster, ns, "web", timeout=120)
        yield web
    finally:
        prom.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_rest_and_grpc_over_tls_through_the_service_match_onnxruntime(tls_web: TlsWeb) -> None:
    md = get(tls_web.cluster, "md", tls_web.namespace, "web")
    service = get(tls_web.cluster, "service", tls_web.namespace, "web")
    assert_answers(tls_web.http())
    assert_answers(tls_web.grpc())
    assert md["status"]["url"].startswith("https://")
    assert {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]} == {"http": "https", "grpc": "https"}
    assert all(p["name"] != "health" for p in service["spec"]["ports"])


def test_a_client_without_the_ca_is_refused_and_plain_http_fails_fast(tls_web: TlsWeb, tmp_path: Path) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_web.url}/v2/health/ready", verify=ssl.create_default_context(), timeout=10)
    stranger = Pki(tmp_path, "stranger-ca")
    client = tls_web.grpc(ca=stranger.ca.cert)
    try:
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            infer(client)
    finally:
        client.close()
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://{tls_web.ip}/v2/models/linear/infer", json=DEFAULT_BODY, timeout=10)
    assert time.monotonic() - started < 3


def test_prometheus_scrapes_the_health_port_and_the_gates_judge_tls_pods(tls_web: TlsWeb) -> None:
    Prober(tls_web.url, "linear", rate=20, max_requests=60, max_seconds=10, ca_file=str(tls_web.pki.ca.cert)) \
        .start().wait()
    tls_web.gates_judged()


def test_a_renewed_secret_is_used_for_new_connections_and_no_request_fails(
        tls_web: TlsWeb, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tls_web.pki.ca.cert
    first, second = tls_web.secret("first"), tls_web.secret("second")
    assert presented_certificate(tls_web.ip, 80, ca) == fingerprint(first["tls.crt"])
    mix = ClientMix(tls_web.url, f"{tls_web.ip}:{GRPC_PORT}", "linear", rate=10, max_seconds=ROTATION_BOUND + 60,
                    timeout=5.0, kinds=CLIENTS, ca_file=str(ca))
    mix.start()
    try:
        wait_for("every client's first answers", lambda: all(r.total >= 5 for r in mix.report().reports.values()),
                 timeout=30)
        tls_web.cluster.apply(tls_secret("web-tls", second), tls_web.namespace)
        replaced = time.monotonic()
        new = fingerprint(second["tls.crt"])
        pods = tls_web.pod_ips()
        wait_for("the renewed certificate on new REST and gRPC connections to every pod", lambda: all(
            presented_certificate(ip, port, ca, alpn) == new
            for ip in pods for port, alpn in ((8080, ()), (GRPC_PORT, ("h2",)))), timeout=ROTATION_BOUND, interval=1)
        took = time.monotonic() - replaced
        assert presented_certificate(tls_web.ip, 80, ca) == new  # and through the Service
        settled = mix.report().total
        wait_for("20 s more of traffic on the new certificate", lambda: mix.report().total >= settled + 4 * 10 * 20,
                 timeout=60)
    finally:
        report = mix.stop()
    with capsys.disabled():
        print(f"\n[tls rotation] new certificate on every new connection {took:.1f}s after the Secret changed")
        for one in report.reports.values():
            print(f"  {one.summary()}")
    assert report.failed == 0, report.describe_failures()
    pods = tls_web.cluster.kubectl_json("get", "pods", "-n", tls_web.namespace, "-l",
                                        "serving.onnx-operator.io/deployment=web")["items"]
    assert all(c["restartCount"] == 0 for p in pods for c in p["status"]["containerStatuses"]), \
        "the certificate is reloaded in place, not by a restart"


@pytest.mark.parametrize("mode", ["Optional", "Require"])
def test_client_certificate_modes_keep_readiness_and_scrapes(tls_web: TlsWeb, mode: str) -> None:
    ns = tls_web.namespace
    tls_web.cluster.apply(model_deployment(
        "web", "v1", replicas=2, kwok=False, runtime={"maxConnectionAgeSeconds": AGE},
        tls={"secretName": "web-tls", "clientAuth": mode, "clientCASecretName": "web-tls"}), ns)
    wait_rolled(tls_web.cluster, ns, "web", mode.lower())
    wait_ready(tls_web.cluster, ns, "web", timeout=120)

    assert_answers(tls_web.http(client_cert=True))
    assert_answers(tls_web.grpc(client_cert=True))
    for client in (tls_web.http(), tls_web.grpc()):
        if mode == "Optional":  # a client without a certificate is still answered
            assert_answers(client)
            continue
        try:
            with pytest.raises(Exception, match=r"(?i)certificate|alert|reset|closed|EOF|UNAVAILABLE"):
                infer(client)
        finally:
            client.close()
    Prober(tls_web.url, "linear", rate=20, max_requests=60, max_seconds=10, ca_file=str(tls_web.pki.ca.cert),
           client_cert=tls_web.client_files()).start().wait()
    tls_web.gates_judged()


def serving_objects(cluster: ClusterHandle, ns: str) -> dict[str, Any]:
    """What the operator owns of `web`, as it wrote it (specs and generations; statuses move on their own)."""
    dep, svc = get(cluster, "deployment", ns, "web-v1"), get(cluster, "service", ns, "web")
    return {"deployment": (dep["metadata"]["generation"], dep["spec"]["template"]), "service": svc["spec"]}


def test_a_missing_or_incomplete_secret_is_a_condition_and_nothing_else_is_disturbed(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("tls-missing-1.onnx")), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready")
    cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False), namespace)
    wait_ready(cluster, namespace, "web", timeout=240)
    url = service_url(cluster, namespace, "web")
    wait_service_answers(url)
    before = serving_objects(cluster, namespace)
    prober = Prober(url, "linear", rate=10, max_seconds=120, timeout=5).start()
    try:
        cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False, tls={"secretName": "absent"}),
                      namespace)
        md = wait_for("Degraded with TLSSecretNotFound", lambda: (o := get(cluster, "md", namespace, "web")) and
                      condition(o, "Degraded").get("reason") == "TLSSecretNotFound" and o, timeout=60)
        message = condition(md, "Degraded")["message"]
        cluster.apply(tls_secret("absent", {"tls.crt": b"-----BEGIN CERTIFICATE-----\n"}, "Opaque"), namespace)
        md = wait_for("Degraded with TLSSecretInvalid", lambda: (o := get(cluster, "md", namespace, "web")) and
                      condition(o, "Degraded").get("reason") == "TLSSecretInvalid" and o, timeout=60)
        invalid = condition(md, "Degraded")["message"]
    finally:
        report = prober.stop()
    after = serving_objects(cluster, namespace)
    assert "Secret 'absent' (spec.tls.secretName) not found" in message and "v1 keeps serving" in message
    assert "Secret 'absent'" in invalid and "no key 'tls.key'" in invalid
    assert "BEGIN" not in invalid, "no Secret value in a status"
    assert md["status"]["phase"] == "Degraded" and md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert after == before, "the serving Deployment and the Service were not touched"
    assert report.failed == 0 and report.total > 10, report.describe_failures()
