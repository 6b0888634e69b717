"""Multi-file sources in the API and in the pods that fetch them: the verify Job and the serving
pod's init container run the same `onnx-server` fetch arguments."""

import hashlib
from typing import Any

import pytest
from onnx_operator.api import InvalidSpec, parse_model_deployment, parse_model_version
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.serving import desired_deployment, startup_failure_threshold
from onnx_operator.desired.verification import desired_verify_job, parse_verify_result

CONFIG = OperatorConfig(runtime_image="registry.local/runtime:1")
SHA, SHA_B = "a" * 64, "b" * 64
FILES = [{"path": "weights.bin", "sha256": SHA_B}, {"path": "model.onnx", "sha256": SHA}]


def mv(status: dict[str, Any] | None = None, **source: Any) -> Any:
    return parse_model_version({"metadata": {"name": "v1", "namespace": "ns", "uid": "u-mv"},
                                "spec": {"model": "big", "version": "1.0.0", "source": source},
                                "status": status or {}})


def md() -> Any:
    return parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u-md", "generation": 1},
                                   "spec": {"modelVersion": "v1"}})


def pods(version: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    job = desired_verify_job(version, CONFIG)["spec"]["template"]["spec"]
    serving = desired_deployment(md(), version, CONFIG, 1)["spec"]["template"]["spec"]
    return job, serving


@pytest.mark.parametrize(("source", "field"), [
    ({"uri": "s3://models/big/1/", "sha256": SHA}, "spec.source.files"),
    ({"uri": "s3://models/big/1/model.onnx", "files": FILES}, "spec.source.files"),
    ({"uri": "s3://models/big/1/", "files": FILES, "sha256": SHA}, "spec.source.sha256"),
    ({"uri": "s3://models/big/1/model.onnx"}, "spec.source.sha256"),
    ({"uri": "s3://models/big/1/", "files": [{"path": "../x", "sha256": SHA}]}, "spec.source.files[0].path"),
    ({"uri": "s3://models/big/1/", "files": [{"path": "/etc/x", "sha256": SHA}]}, "spec.source.files[0].path"),
    ({"uri": "https://h.example/m.tar.gz", "sha256": SHA, "modelFile": "a/../../m.onnx"}, "spec.source.modelFile"),
])
def test_a_source_that_is_not_one_pinned_form_is_rejected_naming_the_field(source: dict[str, Any],
                                                                           field: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        mv(**source)

    assert err.value.field == field


def test_a_folder_source_is_fetched_with_its_file_list_by_both_pods() -> None:
    job, serving = pods(mv(uri="s3://models/big/1/", files=FILES, modelFile="onnx/model.onnx"))

    verify_args = job["containers"][0]["args"]
    fetch_args = serving["initContainers"][0]["args"]
    files = [verify_args[i + 1] for i, arg in enumerate(verify_args) if arg == "--file"]
    assert files == [f"{f['path']}={f['sha256']}" for f in FILES] and "--sha256" not in verify_args
    assert fetch_args[1:fetch_args.index("--dest")] == verify_args[1:verify_args.index("--dest")]
    assert verify_args[verify_args.index("--model-file") + 1] == "onnx/model.onnx"
    served = serving["containers"][0]["args"]
    assert served[served.index("--model-file") + 1] == "onnx/model.onnx"


def test_an_archive_source_keeps_the_single_digest_form() -> None:
    job, serving = pods(mv(uri="https://h.example/big.tar.gz", sha256=SHA))

    args = job["containers"][0]["args"]
    assert args[:5] == ["verify", "--uri", "https://h.example/big.tar.gz", "--sha256", SHA]
    assert "--model-file" not in args and "--model-file" not in serving["containers"][0]["args"]


def test_a_pvc_source_mounts_its_claim_read_only_where_onnx_server_reads_it() -> None:
    job, serving = pods(mv(uri="pvc://model-store/big/1/", files=FILES))

    for pod, container in ((job, job["containers"][0]), (serving, serving["initContainers"][0])):
        assert {"name": "source", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} \
            in pod["volumes"]
        assert {"name": "source", "mountPath": "/mnt/pvc/model-store", "readOnly": True} in container["volumeMounts"]
    assert all(m["name"] != "source" for m in serving["containers"][0]["volumeMounts"])


def test_a_source_on_https_mounts_no_claim() -> None:
    job, serving = pods(mv(uri="https://h.example/m.onnx", sha256=SHA))

    assert [v["name"] for v in job["volumes"]] == ["work", "tmp"]
    assert [v["name"] for v in serving["volumes"]] == ["models", "tmp"]


def test_the_digest_annotation_of_a_folder_is_its_manifest_digest() -> None:
    dep = desired_deployment(md(), mv(uri="s3://models/big/1/", files=FILES), CONFIG, 1)

    manifest = f"{SHA}  model.onnx\n{SHA_B}  weights.bin\n"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["serving.onnx-operator.io/digest"] == f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}"


def test_the_startup_probe_budget_grows_with_the_verified_size() -> None:
    small = mv({"phase": "Ready", "sizeBytes": 1 << 20}, uri="https://h.example/m.onnx", sha256=SHA)
    large = mv({"phase": "Ready", "sizeBytes": 10 << 30}, uri="https://h.example/m.tar", sha256=SHA)

    probes = [desired_deployment(md(), v, CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
              for v in (small, large)]

    seconds = [p["periodSeconds"] * p["failureThreshold"] for p in probes]
    assert seconds[0] >= 300 and seconds[1] >= 300 + 10 * 120
    assert startup_failure_threshold(None) == startup_failure_threshold(0) < startup_failure_threshold(1 << 30)


def test_the_verify_result_carries_the_file_count() -> None:
    result = parse_verify_result('{"digest":"sha256:ab","sizeBytes":30,"fileCount":3,"signature":{}}', 0)

    assert result.ok and (result.size_bytes, result.file_count) == (30, 3)


def test_prepacking_off_keeps_the_weights_memory_mapped_in_the_serving_container() -> None:
    version = parse_model_version({"metadata": {"name": "v1", "namespace": "ns", "uid": "u-mv"}, "spec": {
        "model": "big", "version": "1", "source": {"uri": "https://h.example/m.tar", "sha256": SHA},
        "runtime": {"prepack": False}}})

    args = desired_deployment(md(), version, CONFIG, 1)["spec"]["template"]["spec"]["containers"][0]["args"]

    assert "--no-prepack" in args
