"""spec.logging: the flags and CA volume serving pods get, and the spec's bounds."""

from typing import Any

import pytest
from onnx_operator.api import InvalidSpec
from onnx_operator.desired.serving import desired_deployment

from tests.unit.test_serving_objects import CONFIG, md, mv


def server(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


def test_without_logging_the_server_gets_no_payload_log_flags() -> None:
    args = server(desired_deployment(md(), mv(), CONFIG, 1))["args"]

    assert not [a for a in args if a.startswith("--payload-log") or a == "--namespace"]


def test_logging_passes_sink_rate_mode_and_namespace_to_the_server() -> None:
    spec = {"url": "http://sink.obs:8080/events", "sampleRate": 0.1, "mode": "request"}

    args = server(desired_deployment(md(logging=spec), mv(), CONFIG, 1))["args"]

    tail = args[args.index("--namespace"):]
    assert tail == ["--namespace", "ns", "--payload-log-url", "http://sink.obs:8080/events",
                    "--payload-log-sample-rate", "0.1", "--payload-log-mode", "request"]


def test_https_sink_ca_bundle_is_mounted_from_its_configmap_and_passed_as_a_file() -> None:
    spec = {"url": "https://sink.obs/events", "caConfigMap": {"name": "sink-ca", "key": "bundle.pem"}}

    dep = desired_deployment(md(logging=spec), mv(), CONFIG, 1)

    pod, container = dep["spec"]["template"]["spec"], server(dep)
    assert {"name": "payload-log-ca", "configMap": {"name": "sink-ca", "items": [
        {"key": "bundle.pem", "path": "bundle.pem"}]}} in pod["volumes"]
    assert {"name": "payload-log-ca", "mountPath": "/etc/onnx-server/payload-log-ca", "readOnly": True} \
        in container["volumeMounts"]
    args = container["args"]
    assert args[args.index("--payload-log-ca-file") + 1] == "/etc/onnx-server/payload-log-ca/bundle.pem"
    assert args[args.index("--payload-log-mode") + 1] == "both"


@pytest.mark.parametrize(("logging", "field"), [
    ({"url": "ftp://sink/x"}, "spec.logging.url"),
    ({"url": "http://sink/x", "sampleRate": 1.5}, "spec.logging.sampleRate"),
    ({"url": "http://sink/x", "mode": "all"}, "spec.logging.mode"),
    ({"url": "http://sink/x", "caConfigMap": {"name": "ca"}}, "spec.logging.caConfigMap"),
])
def test_bad_logging_spec_is_refused_naming_the_field(logging: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        md(logging=logging)

    assert err.value.field == field
