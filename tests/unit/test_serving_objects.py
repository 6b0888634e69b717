from typing import Any

import pytest
from onnx_operator.api import InvalidSpec, parse_model_deployment, parse_model_version
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.names import bounded_name, deployment_name
from onnx_operator.desired.serving import desired_deployment, desired_hpa, desired_service
from onnx_operator.desired.verification import desired_verify_job, parse_verify_result, signature_mismatch

CONFIG = OperatorConfig(runtime_image="registry.local/runtime:1")
SHA = "a" * 64


def md(**spec: Any) -> Any:
    return parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u-md", "generation": 1},
                                   "spec": {"modelVersion": "v1", **spec}})


def mv(**spec: Any) -> Any:
    return parse_model_version({"metadata": {"name": "v1", "namespace": "ns", "uid": "u-mv"},
                                "spec": {"model": "iris", "version": "1.0.0",
                                         "source": {"uri": "https://m.example/x.onnx", "sha256": SHA}, **spec}})


def test_deployment_runs_the_runtime_image_with_a_fetching_init_container() -> None:
    dep = desired_deployment(md(replicas=3), mv(), CONFIG, 3)
    pod = dep["spec"]["template"]["spec"]
    assert dep["metadata"]["name"] == "web-v1" and dep["spec"]["replicas"] == 3
    assert pod["initContainers"][0]["args"][:3] == ["fetch", "--uri", "https://m.example/x.onnx"]
    assert pod["containers"][0]["image"] == "registry.local/runtime:1"
    assert pod["containers"][0]["args"][:2] == ["serve", "--model-dir"]
    assert dep["metadata"]["ownerReferences"][0] == {"apiVersion": "serving.onnx-operator.io/v1alpha1",
        "kind": "ModelDeployment", "name": "web", "uid": "u-md", "controller": True, "blockOwnerDeletion": True}


def test_serving_pod_meets_pod_security_restricted_with_read_only_root() -> None:
    pod = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_runtime_overrides_of_the_deployment_win_over_version_defaults() -> None:
    dep = desired_deployment(md(runtime={"threads": 4}),
                             mv(runtime={"threads": 1, "batching": {"maxBatchSize": 8, "maxDelayMs": 3},
                                         "warmup": False}),
                             CONFIG, 1)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--threads") + 1] == "4"
    assert args[args.index("--max-batch-size") + 1] == "8" and "--no-warmup" in args


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    auto = md(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    assert "replicas" not in desired_deployment(auto, mv(), CONFIG, None)["spec"]
    hpa = desired_hpa(auto, "v1", 2, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "web-v1"
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


def test_service_selects_every_version_of_the_deployment() -> None:
    svc = desired_service(md(), CONFIG)
    assert svc["spec"]["selector"] == {"serving.onnx-operator.io/deployment": "web"}


def test_long_names_are_bounded_and_stay_unique() -> None:
    a, b = deployment_name("m" * 40, "v" * 40 + "a"), deployment_name("m" * 40, "v" * 40 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert bounded_name("short", "name") == "short-name"


def test_verify_job_reports_through_its_termination_message() -> None:
    job = desired_verify_job(mv(), CONFIG)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "verify" and "--termination-message-path" in container["args"]
    assert container["terminationMessagePolicy"] == "File"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelVersion"


def test_verify_results_are_read_without_trusting_them() -> None:
    ok = parse_verify_result('{"digest":"sha256:ab","sizeBytes":3,"signature":{"inputs":[],"outputs":[]}}', 0)
    assert ok.ok and ok.digest == "sha256:ab"
    bad = parse_verify_result('{"reason":"ChecksumMismatch","message":"sha256 differs"}', 4)
    assert (bad.ok, bad.reason) == (False, "ChecksumMismatch")
    odd = parse_verify_result('{"reason":"Whatever","message":"x"}', 1)
    assert odd.reason == "VerificationFailed"
    assert parse_verify_result("not json", 137).reason == "VerificationFailed"


def test_declared_signature_must_match_the_model() -> None:
    declared = mv(signature={"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}]}).spec.signature
    found = mv(signature={"inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 3]}]}).spec.signature
    assert signature_mismatch(declared, declared) is None
    assert "shape" in (signature_mismatch(declared, found) or "")


def test_invalid_spec_names_the_field_path() -> None:
    with pytest.raises(InvalidSpec) as err:
        md(strategy={"type": "Canary", "canary": {"steps": [{"weight": 500}]}})
    assert err.value.field == "spec.strategy.canary.steps[0].weight"
