import re
from typing import Any

import pytest
from onnx_operator.api import InvalidSpec, parse_model_deployment, parse_model_version
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.names import bounded_name, deployment_name
from onnx_operator.desired.serving import (
    desired_deployment,
    desired_hpa,
    desired_preview_service,
    desired_service,
    service_url,
)
from onnx_operator.desired.traffic import desired_role_service
from onnx_operator.desired.verification import (
    PERMANENT_EXIT_CODES,
    desired_verify_job,
    parse_verify_result,
    signature_mismatch,
)

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


def test_serving_pod_probes_the_v2_health_endpoints_on_the_named_port() -> None:
    server = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]

    assert server["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_in_flight_requests_finish_inside_the_grace_period() -> None:
    pod = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]

    assert set(pre_stop) == {"sleep"}  # no shell in the image
    assert 0 < pre_stop["sleep"]["seconds"] < pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize(("age", "prestop"), [(None, 5 + 33), (2, 5 + 3), (0, 5)])
def test_a_terminating_pod_serves_until_every_client_connection_outlived_its_age(age: int | None,
                                                                                 prestop: int) -> None:
    runtime = {} if age is None else {"runtime": {"maxConnectionAgeSeconds": age}}
    pod = desired_deployment(md(**runtime), mv(), CONFIG, 1)["spec"]["template"]["spec"]
    server = pod["containers"][0]

    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] == prestop
    assert pod["terminationGracePeriodSeconds"] == prestop + 25
    assert server["args"][-2:] == ["--max-connection-age", str(30 if age is None else age)]


def test_connection_limits_reach_the_server_flags() -> None:
    runtime = {"headerTimeoutSeconds": 5, "bodyTimeoutSeconds": 20, "minBodyBytesPerSecond": 8192,
               "idleTimeoutSeconds": 120, "maxConnections": 2000}
    args = desired_deployment(md(runtime=runtime), mv(), CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]["args"]

    assert " ".join(args).endswith("--header-timeout 5 --body-timeout 20 --min-body-rate 8192 --idle-timeout 120 "
                                   "--max-connections 2000 --max-connection-age 30")


def test_serving_pod_writes_only_to_its_empty_dirs() -> None:
    pod = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}

    assert mounts == {"/models": "models", "/tmp": "tmp"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_serving_pod_carries_the_verified_digest() -> None:
    verified = mv()
    verified.status.digest = "sha256:" + "b" * 64

    template = desired_deployment(md(), verified, CONFIG, 1)["spec"]["template"]

    assert template["metadata"]["annotations"]["serving.onnx-operator.io/digest"] == "sha256:" + "b" * 64


def test_serve_command_names_the_model_and_version() -> None:
    args = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]["args"]

    assert args == ["serve", "--model-dir", "/models", "--name", "iris", "--version", "1.0.0",
                    "--model-deployment", "web", "--host", "0.0.0.0", "--port", "8080", "--grpc-port", "8081",
                    "--max-connection-age", "30"]


def test_serving_pods_expose_a_grpc_port_by_default() -> None:
    container = desired_deployment(md(), mv(), CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]

    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert container["args"][container["args"].index("--grpc-port") + 1] == "8081"


def test_every_service_of_a_deployment_gains_an_h2c_grpc_port() -> None:
    services = [desired_service(md(), CONFIG), desired_preview_service(md(), "v1"),
                desired_role_service(md(), "canary", "v1")]

    for service in services:
        grpc = {p["name"]: p for p in service["spec"]["ports"]}["grpc"]
        assert grpc == {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
                        "appProtocol": "kubernetes.io/h2c"}


def test_runtime_grpc_false_on_the_deployment_turns_grpc_off_everywhere() -> None:
    off = md(runtime={"grpc": False})

    container = desired_deployment(off, mv(), CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]
    service = desired_service(off, CONFIG)

    assert [p["name"] for p in container["ports"]] == ["http"]
    assert "--no-grpc" in container["args"] and "--grpc-port" not in container["args"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]


def test_runtime_grpc_false_on_a_version_only_takes_its_pods_off_the_grpc_port() -> None:
    container = desired_deployment(md(), mv(runtime={"grpc": False}), CONFIG, 1)["spec"]["template"]["spec"][
        "containers"][0]

    assert [p["name"] for p in container["ports"]] == ["http"] and "--no-grpc" in container["args"]
    assert "grpc" in [p["name"] for p in desired_service(md(), CONFIG)["spec"]["ports"]]


def test_the_deployment_runtime_grpc_overrides_the_versions() -> None:
    container = desired_deployment(md(runtime={"grpc": True}), mv(runtime={"grpc": False}), CONFIG, 1)[
        "spec"]["template"]["spec"]["containers"][0]

    assert "--no-grpc" not in container["args"] and "grpc" in [p["name"] for p in container["ports"]]


def test_resources_apply_to_the_fetching_init_container_too() -> None:
    resources = {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}

    pod = desired_deployment(md(resources=resources), mv(), CONFIG, 1)["spec"]["template"]["spec"]

    assert pod["containers"][0]["resources"] == resources == pod["initContainers"][0]["resources"]


def test_deployment_and_pods_carry_the_version_labels() -> None:
    dep = desired_deployment(md(), mv(), CONFIG, 1)

    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/name": "onnx-model", "app.kubernetes.io/managed-by": "onnx-operator",
        "app.kubernetes.io/component": "serving", "serving.onnx-operator.io/deployment": "web",
        "serving.onnx-operator.io/version": "v1"}


def test_service_maps_port_80_to_the_named_port_and_has_an_in_cluster_url() -> None:
    svc = desired_service(md(), CONFIG)

    assert svc["spec"]["ports"][0] == {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    assert service_url(md()) == "http://web.ns.svc.cluster.local"


@pytest.mark.parametrize("mv_name", ["v1", "v" * 63, "model.v1.2", "a" * 30 + "-" + "b" * 32])
def test_deployment_name_is_a_bounded_dns_subdomain(mv_name: str) -> None:
    name = deployment_name("m" * 63, mv_name)

    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name)


def test_verify_job_takes_its_retries_and_ttl_from_the_config() -> None:
    config = OperatorConfig(verify_backoff_limit=1, verify_job_ttl_seconds=60, verify_deadline_seconds=120)

    spec = desired_verify_job(mv(), config)["spec"]

    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"]) == (1, 60, 120)


def test_verify_job_fails_at_once_on_failures_no_retry_can_fix() -> None:
    from onnx_server import errors

    rule = desired_verify_job(mv(), CONFIG)["spec"]["podFailurePolicy"]["rules"][0]
    codes = {cls.reason: cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ServerError) and cls is not errors.ServerError}

    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == "verify"
    assert sorted(PERMANENT_EXIT_CODES.values()) == rule["onExitCodes"]["values"]
    assert all(codes[reason] == code for reason, code in PERMANENT_EXIT_CODES.items())
    assert codes["FetchFailed"] not in rule["onExitCodes"]["values"]


def test_verify_pod_meets_pod_security_restricted() -> None:
    pod = desired_verify_job(mv(), CONFIG)["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]

    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_verify_job_name_is_stable_for_one_model_version() -> None:
    assert desired_verify_job(mv(), CONFIG)["metadata"]["name"] == desired_verify_job(mv(), CONFIG)["metadata"]["name"]
    assert desired_verify_job(mv(), CONFIG)["metadata"]["name"].startswith("verify-v1-")


@pytest.mark.parametrize("reason", ["ChecksumMismatch", "FetchFailed", "InvalidModel", "UnsafePath", "TooLarge",
                                    "InvalidArgument"])
def test_each_known_verify_failure_keeps_its_reason(reason: str) -> None:
    result = parse_verify_result(f'{{"reason":"{reason}","message":"detail"}}', 4)

    assert (result.ok, result.reason, result.message) == (False, reason, "detail")


def test_serving_pods_carry_the_prometheus_scrape_annotations_for_the_runtime_port() -> None:
    config = OperatorConfig(runtime_image="registry.local/runtime:1", serving_port=9000)

    annotations = desired_deployment(md(), mv(), config, 1)["spec"]["template"]["metadata"]["annotations"]

    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pod_annotations_of_the_spec_override_the_scrape_annotations() -> None:
    spec = md(podAnnotations={"prometheus.io/scrape": "false", "team": "ml"})

    annotations = desired_deployment(spec, mv(), CONFIG, 1)["spec"]["template"]["metadata"]["annotations"]

    assert annotations["prometheus.io/scrape"] == "false" and annotations["team"] == "ml"
