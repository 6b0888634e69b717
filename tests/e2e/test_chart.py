"""The Helm chart with real tools: helm lint, values schema, kubeconform against this cluster's
OpenAPI (CRDs included), checkov, and install/upgrade/uninstall into the local control plane."""

from __future__ import annotations

import filecmp
import functools
import http.server
import subprocess
import threading
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localcluster.chart import image_values as chart_image_values
from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import iris_model
from localcluster.realnode import NAME as REAL_NODE
from localcluster.realnode import NODE_IP
from localcluster.tools.kube_schemas import SCHEMA_LOCATION, write_schemas
from tests.e2e.helpers import service_url, wait_ready

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "onnx-operator"
ALL_OPTIONS = ["--set", "networkPolicy.enabled=true", "--set", "podDisruptionBudget.enabled=true",
               "--set", "dashboards.enabled=true"]


@pytest.fixture(scope="module")
def tools(cluster: ClusterHandle) -> Path:
    bin_dir = Path(cluster.kubectl_bin).parent
    subprocess.run([str(REPO / "localcluster/tools/build-tools.sh"), str(bin_dir)], check=True, timeout=1800)
    return bin_dir


def helm(tools: Path, cluster: ClusterHandle, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(tools / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
                         capture_output=True, text=True, timeout=300, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {out.stderr}")
    return out


def image_values(cluster: ClusterHandle) -> list[str]:
    """`--set` flags for the images the real node has (built from this checkout by `make cluster`)."""
    return [arg for key, value in chart_image_values(cluster.extra["images"]).items()
            for arg in ("--set", f"{key}={value}")]


def test_chart_crds_are_the_generated_ones() -> None:
    names = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert names == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    _, mismatch, errors = filecmp.cmpfiles(REPO / "crds", CHART / "crds", names, shallow=False)
    assert mismatch == [] and errors == [], "copy crds/ into the chart (make crds does)"


def test_helm_lint_passes(tools: Path, cluster: ClusterHandle) -> None:
    out = helm(tools, cluster, "lint", "--strict", str(CHART), *ALL_OPTIONS)
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(("option", "message"), [
    ("replicas=2,leaderElection.enabled=false", "replicas"),
    ("leaderElection.leaseDuration=0", "leaseDuration"),
    ("logFormat=xml", "logFormat"),
    ("watchNamespaces[0]=Bad_Name", "watchNamespaces"),
    ("unknownKey=1", "unknownKey"),
    ("podMonitor.interval=soon", "podMonitor"),
])
def test_values_schema_rejects_wrong_values(tools: Path, cluster: ClusterHandle, option: str, message: str) -> None:
    out = helm(tools, cluster, "template", "x", str(CHART), "--kube-version", "1.36.0", "--set", option, check=False)
    assert out.returncode != 0 and message in out.stderr


def test_pod_monitor_is_off_by_default(tools: Path, cluster: ClusterHandle) -> None:
    out = helm(tools, cluster, "template", "op", str(CHART), "--kube-version", "1.36.0")
    assert "kind: PodMonitor" not in out.stdout


def test_pod_monitor_scrapes_the_serving_pods_of_the_watched_namespaces(tools: Path, cluster: ClusterHandle) -> None:
    out = helm(tools, cluster, "template", "op", str(CHART), "--kube-version", "1.36.0", "--set",
               "podMonitor.enabled=true", "--set", "watchNamespaces={team-a}", "--set", "podMonitor.labels.release=kps")

    monitor = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PodMonitor")

    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "onnx-operator",
                                                          "app.kubernetes.io/component": "serving"}
    plain, tls = monitor["spec"]["podMetricsEndpoints"]
    # pods without spec.tls on their serving port; pods with it (labelled so) on their plain health port only
    assert plain == {"port": "http", "path": "/metrics", "interval": "15s", "relabelings": [
        {"sourceLabels": ["__meta_kubernetes_pod_label_serving_onnx_operator_io_metrics_port"], "regex": "health",
         "action": "drop"}]}
    assert tls == {"port": "health", "path": "/metrics", "interval": "15s"}


@pytest.fixture(scope="module")
def rendered(tools: Path, cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chart") / "rendered.yaml"
    version = cluster.kubectl_json("version")["serverVersion"]["gitVersion"]
    path.write_text(helm(tools, cluster, "template", "onnx-operator", str(CHART), "-n", "onnx-operator",
                         "--kube-version", version, "--include-crds", *ALL_OPTIONS).stdout)
    return path


def test_rendered_manifests_are_valid_for_this_cluster(tools: Path, cluster: ClusterHandle, rendered: Path,
                                                       tmp_path: Path, crds: None) -> None:
    count = write_schemas(lambda p: cluster.kubectl("get", "--raw", p), tmp_path / "schemas")
    assert count > 50

    out = subprocess.run([str(tools / "kubeconform"), "-summary", "-schema-location",
                          str(tmp_path / "schemas" / SCHEMA_LOCATION), str(rendered)],
                         capture_output=True, text=True, timeout=120, check=False)

    assert out.returncode == 0, out.stdout + out.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in out.stdout


def test_rendered_manifests_also_validate_in_namespaced_mode(tools: Path, cluster: ClusterHandle) -> None:
    out = helm(tools, cluster, "template", "op", str(CHART), "--kube-version", "1.36.0",
               "--set", "watchNamespaces={team-a,team-b}")
    roles = [d["metadata"]["namespace"] for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Role"]
    assert sorted(roles) == ["default", "team-a", "team-b"], "one Role per watched namespace, plus the Lease's"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "ClusterRole"]
    assert [r["resources"] for r in docs[0]["rules"]] == [["customresourcedefinitions"]], \
        "namespaced mode grants nothing cluster-wide but kopf's CRD watch"
    assert 'value: "team-a,team-b"' in out.stdout


def rendered_docs(tools: Path, cluster: ClusterHandle, *options: str) -> dict[str, dict[str, Any]]:
    out = helm(tools, cluster, "template", "op", str(CHART), "-n", "ops", "--kube-version", "1.36.0", *options)
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out.stdout) if d}


def test_chart_defaults_to_two_replicas_electing_a_leader(tools: Path, cluster: ClusterHandle) -> None:
    docs = rendered_docs(tools, cluster)

    dep = docs["Deployment/op-onnx-operator"]
    pod = dep["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env["ONNX_OPERATOR_LEADER_ELECT"] == "true"
    assert env["ONNX_OPERATOR_LEADER_ELECT_RESOURCE_NAME"] == "op-onnx-operator"
    assert env["ONNX_OPERATOR_LEADER_ELECT_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spread["podAffinityTerm"]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget/op-onnx-operator"]["spec"]["minAvailable"] == 1
    role = docs["Role/op-onnx-operator-leader-election"]
    assert role["metadata"]["namespace"] == "ops"
    assert [(r["resources"], r.get("resourceNames"), r["verbs"]) for r in role["rules"]] == [
        (["leases"], None, ["create"]), (["leases"], ["op-onnx-operator"], ["get", "update"])]
    binding = docs["RoleBinding/op-onnx-operator-leader-election"]
    assert binding["subjects"][0]["name"] == "op-onnx-operator"


def test_chart_without_leader_election_runs_one_replica_with_recreate(tools: Path, cluster: ClusterHandle) -> None:
    docs = rendered_docs(tools, cluster, "--set", "leaderElection.enabled=false,replicas=1")

    dep = docs["Deployment/op-onnx-operator"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert env["ONNX_OPERATOR_LEADER_ELECT"] == "false"
    assert not [k for k in docs if "leader-election" in k or k.startswith("PodDisruptionBudget/")]


@pytest.fixture(scope="module")
def checkov() -> Path:
    """checkov in its own cached virtualenv (its pins must not touch the project's)."""
    home = Path.home() / ".cache" / "onnx-operator" / "checkov-venv"
    exe = home / "bin" / "checkov"
    if not exe.exists():
        venv.create(home, with_pip=True)
        subprocess.run([str(home / "bin" / "pip"), "install", "-q", "checkov==3.3.30"], check=True, timeout=1200)
    return exe


def test_checkov_finds_no_failed_checks(checkov: Path, rendered: Path) -> None:
    out = subprocess.run([str(checkov), "--config-file", str(CHART / ".checkov.yaml"), "-f", str(rendered),
                          "--compact", "--quiet", "--skip-download"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_helm_install_upgrade_and_uninstall(tools: Path, cluster: ClusterHandle, crds: None, namespace: str) -> None:
    ns = f"{namespace}-install"  # a fresh one per run: a rerun never meets the last one still terminating
    try:
        helm(tools, cluster, "install", "demo", str(CHART), "-n", ns, "--create-namespace", "--wait",
             "--timeout", "120s", *ALL_OPTIONS, *image_values(cluster))
        # helm --wait returns once replicas - maxUnavailable (1 of 2) are ready; the second follows
        dep = wait_for("both operator replicas available", lambda: (d := cluster.kubectl_json(
            "get", "deployment", "demo-onnx-operator", "-n", ns))["status"].get("availableReplicas") == 2 and d,
            timeout=120)
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        for kind in ("serviceaccount", "service", "networkpolicy", "poddisruptionbudget", "role", "rolebinding"):
            assert cluster.kubectl("get", kind, "-n", ns, "-o", "name")
        assert cluster.kubectl("get", "clusterrole", "demo-onnx-operator", "-o", "name")

        helm(tools, cluster, "upgrade", "demo", str(CHART), "-n", ns, "--wait", "--timeout", "120s",
             "--set", "logFormat=text", *image_values(cluster))
        env = cluster.kubectl_json("get", "deployment", "demo-onnx-operator", "-n", ns)[
            "spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "ONNX_OPERATOR_LOG_FORMAT", "value": "text"} in env
        assert "networkpolicy" not in cluster.kubectl("get", "networkpolicy", "-n", ns, "-o", "name")

        helm(tools, cluster, "uninstall", "demo", "-n", ns, "--wait")
        wait_for("objects removed", lambda: not cluster.kubectl(
            "get", "deployment/demo-onnx-operator", "serviceaccount/demo-onnx-operator",
            "service/demo-onnx-operator-metrics", "clusterrole/demo-onnx-operator", "-n", ns,
            "--ignore-not-found", "-o", "name"))
    finally:
        helm(tools, cluster, "uninstall", "demo", "-n", ns, check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)




@pytest.fixture()
def examples_store(tmp_path: Path) -> Iterator[str]:
    """The model store examples/basic/ points at (what `make demo` runs): iris at its fixed address."""
    (tmp_path / "iris/1.0.0").mkdir(parents=True)
    (tmp_path / "iris/1.0.0/model.onnx").write_bytes(iris_model())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer((NODE_IP, 30080), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://{NODE_IP}:30080"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_chart_operator_pod_serves_the_basic_example_on_the_real_node(
        tools: Path, cluster: ClusterHandle, crds: None, namespace: str, examples_store: str) -> None:
    release_ns = f"{namespace}-op"
    try:
        helm(tools, cluster, "install", "op", str(CHART), "-n", release_ns, "--create-namespace", "--wait",
             "--timeout", "180s", *image_values(cluster), "--set", f"watchNamespaces[0]={namespace}")
        pod = cluster.kubectl_json("get", "pods", "-n", release_ns)["items"][0]
        assert pod["spec"]["nodeName"] == REAL_NODE and pod["status"]["podIP"].startswith("198.18.0.")

        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(REPO / "examples/basic"))
        md = wait_ready(cluster, namespace, "iris", timeout=300)
        url = service_url(cluster, namespace, "iris")
        resp = httpx.post(f"{url}/v2/models/iris/infer", timeout=10, json={"inputs": [{
            "name": "float_input", "shape": [3, 2], "datatype": "FP32", "data": [5.1, 3.5, 6.7, 3.0, 4.9, 1.0]}]})

        assert md["status"]["servingVersion"] == "iris-1-0-0"
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == "1.0.0"
        assert [o["name"] for o in resp.json()["outputs"]] == ["label"]  # tensors unless asked by name
        serving = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "serving.onnx-operator.io/deployment=iris")
        assert {p["spec"]["nodeName"] for p in serving["items"]} == {REAL_NODE}
    finally:
        cluster.kubectl("delete", "md,mv", "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False)
        helm(tools, cluster, "uninstall", "op", "-n", release_ns, "--wait", check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found", check=False)
