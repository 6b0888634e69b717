"""spec.tls: what the serving pods and Services become, and the Secret checks that guard a rollout."""

from typing import Any

import pytest
from onnx_operator.api import InvalidSpec
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.serving import desired_deployment, desired_service, service_url
from onnx_operator.desired.tls import SecretShape, required_secrets, tls_secret_problem

from tests.unit.test_serving_objects import md, mv

CONFIG = OperatorConfig(runtime_image="registry.local/runtime:1", health_port=8090)
TLS_SECRET = SecretShape("kubernetes.io/tls", frozenset({"tls.crt", "tls.key", "ca.crt"}))


def pod(spec: Any) -> Any:
    return desired_deployment(spec, mv(), CONFIG, 1)["spec"]["template"]


def server(spec: Any) -> Any:
    return pod(spec)["spec"]["containers"][0]


def test_without_tls_nothing_changes_probes_scrape_and_services_use_the_serving_port() -> None:
    container, template = server(md()), pod(md())
    assert "--tls-cert" not in container["args"] and "--health-port" not in container["args"]
    assert {p["name"] for p in container["ports"]} == {"http", "grpc"}
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    ports = desired_service(md(), CONFIG)["spec"]["ports"]
    assert [p.get("appProtocol") for p in ports] == [None, "kubernetes.io/h2c"]
    assert service_url(md()).startswith("http://")


def test_tls_mounts_the_secret_passes_the_flags_and_moves_probes_and_scrapes_to_the_health_port() -> None:
    spec = md(tls={"secretName": "web-tls"})
    container, template = server(spec), pod(spec)
    args = container["args"]
    assert args[args.index("--tls-cert") + 1] == "/etc/onnx-server/tls/tls.crt"
    assert args[args.index("--tls-key") + 1] == "/etc/onnx-server/tls/tls.key"
    assert args[args.index("--health-port") + 1] == "8090" and "--tls-client-auth" not in args
    assert {"name": "health", "containerPort": 8090, "protocol": "TCP"} in container["ports"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8090"
    assert template["metadata"]["labels"]["serving.onnx-operator.io/metrics-port"] == "health"
    assert "serving.onnx-operator.io/metrics-port" not in pod(md())["metadata"]["labels"]
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "web-tls" and volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/onnx-server/tls", "readOnly": True}
    assert "subPath" not in mount  # subPath mounts never see a renewed Secret


def test_tls_services_say_https_and_keep_the_health_port_out() -> None:
    spec = md(tls={"secretName": "web-tls"})
    ports = desired_service(spec, CONFIG)["spec"]["ports"]
    assert [(p["name"], p["appProtocol"]) for p in ports] == [("http", "https"), ("grpc", "https")]
    assert service_url(spec) == "https://web.ns.svc.cluster.local"


@pytest.mark.parametrize(("mode", "flag"), [("Require", "require"), ("Optional", "optional")])
def test_client_auth_mounts_the_ca_secret_and_passes_its_mode(mode: str, flag: str) -> None:
    spec = md(tls={"secretName": "web-tls", "clientAuth": mode, "clientCASecretName": "clients-ca"})
    container, template = server(spec), pod(spec)
    args = container["args"]
    assert args[args.index("--tls-client-auth") + 1] == flag
    assert args[args.index("--tls-client-ca") + 1] == "/etc/onnx-server/client-ca/ca.crt"
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "client-ca"]
    assert volume["secret"] == {"secretName": "clients-ca", "defaultMode": 0o440,
                                "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_client_auth_without_a_ca_secret_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.tls\.clientCASecretName is required"):
        md(tls={"secretName": "web-tls", "clientAuth": "Require"})


def test_a_missing_serving_secret_is_named_with_its_field() -> None:
    spec = md(tls={"secretName": "web-tls"})
    assert tls_secret_problem(spec, {"web-tls": None}) == (
        "TLSSecretNotFound", "Secret 'web-tls' (spec.tls.secretName) not found in namespace ns")


def test_a_secret_without_the_key_is_named_with_the_key() -> None:
    spec = md(tls={"secretName": "web-tls"})
    reason, message = tls_secret_problem(spec, {"web-tls": SecretShape("Opaque", frozenset({"tls.crt"}))}) or ("", "")
    assert reason == "TLSSecretInvalid"
    assert "Secret 'web-tls'" in message and "no key 'tls.key'" in message and "it has: tls.crt" in message


def test_a_ca_secret_without_ca_crt_is_named() -> None:
    spec = md(tls={"secretName": "web-tls", "clientAuth": "Optional", "clientCASecretName": "clients"})
    found = {"web-tls": TLS_SECRET, "clients": SecretShape("Opaque", frozenset({"tls.crt"}))}
    reason, message = tls_secret_problem(spec, found) or ("", "")
    assert reason == "TLSSecretInvalid" and "'clients' (spec.tls.clientCASecretName) has no key 'ca.crt'" in message


def test_one_secret_may_serve_as_both_certificate_and_client_ca() -> None:
    spec = md(tls={"secretName": "web-tls", "clientAuth": "Require", "clientCASecretName": "web-tls"})
    assert required_secrets(spec) == {"web-tls": ("tls.crt", "tls.key", "ca.crt")}
    assert tls_secret_problem(spec, {"web-tls": TLS_SECRET}) is None


def test_a_complete_secret_is_no_problem_and_no_tls_needs_no_secret() -> None:
    assert tls_secret_problem(md(tls={"secretName": "web-tls"}), {"web-tls": TLS_SECRET}) is None
    assert required_secrets(md()) == {}
