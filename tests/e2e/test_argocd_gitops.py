"""GitOps through a real Argo CD (built from its Go module, `make argocd-bin`): Applications that sync a
local Git repository into the local control plane, with our argocd-cm patch for health and actions.

Every step commits to Git, asks Argo CD to refresh (as a webhook would) and waits for the revision
to be synced; `assert_no_drift` then checks that the operator's writes never make it OutOfSync."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.argocd.stack import CM_PATCH, NAMESPACE, ArgoCD, GitRemote
from localcluster.chart import image_values
from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import Artifact, ModelStore
from tests.e2e.helpers import condition, get, model_deployment, model_version, wait_until
from tests.e2e.test_httproute import gateway_api  # noqa: F401 (fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
REPO = Path(__file__).resolve().parents[2]
CANARY = {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "5s"}, {"weight": 75}, {"weight": 100}]}}
TIMEOUT = 180


@pytest.fixture(scope="module")
def argocd(cluster: ClusterHandle, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArgoCD]:
    bin_dir = Path(cluster.kubectl_bin).parent
    for script in ("localcluster/tools/build-tools.sh", "localcluster/argocd/build.sh"):  # cached: copies only
        subprocess.run([str(REPO / script), str(bin_dir)], check=True, timeout=1800)
    stack = ArgoCD(cluster, tmp_path_factory.mktemp("argocd"), bin_dir)
    try:
        started = time.monotonic()
        stack.start()
        print(f"\n--- Argo CD started in {time.monotonic() - started:.1f}s")
        yield stack
    finally:
        print("\n--- Argo CD resident memory (MiB):", json.dumps(stack.memory_mib()))
        print("--- application controller log (tail) ---\n" + stack.log_tail("argocd-application-controller"))
        stack.stop()


@pytest.fixture(autouse=True)
def no_applications_left(argocd: ArgoCD) -> Iterator[None]:
    """Applications have no cascading finalizer: deleting them leaves the test namespace to its fixture."""
    yield
    argocd.cluster.kubectl("delete", "applications", "--all", "-n", NAMESPACE, "--wait=false")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> GitRemote:
    return GitRemote(tmp_path_factory.mktemp("git"))


def application(name: str, repo_url: str, path: str, namespace: str) -> dict[str, Any]:
    """examples/argocd/application.yaml pointed at the local repository and a test namespace."""
    app = yaml.safe_load((REPO / "examples/argocd/application.yaml").read_text())
    app["metadata"]["name"] = name
    app["spec"]["source"].update(repoURL=repo_url, path=path)
    app["spec"]["destination"]["namespace"] = namespace
    return dict(app)


def folder(namespace: str, *manifests: str) -> dict[str, str]:
    """One file per object under apps/<namespace>/, as a repository of deployments would hold them."""
    files = {}
    for manifest in manifests:
        obj = json.loads(manifest)
        files[f"apps/{namespace}/{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"] = yaml.safe_dump(obj)
    return files


def resource_health(argocd: ArgoCD, app: str, kind: str, name: str) -> dict[str, Any]:
    """A resource's health as Argo CD computed it (its resource tree, through the API server)."""
    url = f"http://{argocd.server}/api/v1/applications/{app}/resource-tree?appNamespace={NAMESPACE}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        tree = json.load(resp)
    node: dict[str, Any] = next((n for n in tree.get("nodes", []) if n["kind"] == kind and n["name"] == name), {})
    return dict(node.get("health") or {})


def wait_resource_health(argocd: ArgoCD, app: str, kind: str, name: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        health = resource_health(argocd, app, kind, name)
        return health if health.get("status") == status else None
    return wait_for(f"{kind}/{name} {status} in {app}", probe, timeout=TIMEOUT, interval=0.5)


def wait_app(argocd: ArgoCD, app: str, what: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = TIMEOUT) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = argocd.app(app)
        return obj if check(obj.get("status", {})) else None
    return wait_for(f"Application {app}: {what}", probe, timeout=timeout, interval=0.5)


def wait_synced(argocd: ArgoCD, app: str, revision: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    argocd.refresh(app)
    return wait_app(argocd, app, f"Synced at {revision[:8]}", lambda s: s.get("sync", {}).get("status") == "Synced"
                    and s["sync"].get("revision") == revision, timeout)


def wait_health(argocd: ArgoCD, app: str, status: str) -> dict[str, Any]:
    return wait_app(argocd, app, status, lambda s: s.get("health", {}).get("status") == status)


def assert_no_drift(argocd: ArgoCD, app: str) -> None:
    """Synced, `argocd app diff` finds nothing, and no revision was synced twice (self-heal never fired)."""
    state = argocd.app(app)["status"]
    assert state["sync"]["status"] == "Synced", state["sync"]
    diff = argocd.cli("app", "diff", app, check=False)
    assert diff.returncode == 0, f"argocd app diff found drift:\n{diff.stdout}{diff.stderr}"
    revisions = [h["revision"] for h in state.get("history", [])]
    assert state["sync"]["revision"] in revisions, "the synced revision is missing from the sync history"
    assert len(revisions) == len(set(revisions)), f"a revision was synced again (drift healed): {revisions}"


def start_app(argocd: ArgoCD, remote: GitRemote, namespace: str, *manifests: str) -> str:
    sha = remote.commit(f"{namespace}: first version", folder(namespace, *manifests))
    argocd.cluster.apply(json.dumps(application(namespace, remote.url, f"apps/{namespace}", namespace)), NAMESPACE)
    wait_synced(argocd, namespace, sha)
    return sha


def test_first_sync_is_synced_then_healthy_once_the_operator_reports_ready(
        argocd: ArgoCD, remote: GitRemote, namespace: str, models: ModelStore) -> None:
    art = models.model("gitops-first.onnx")

    start_app(argocd, remote, namespace, model_version("v1", art), model_deployment("web", "v1", replicas=2))

    wait_health(argocd, namespace, "Healthy")
    ready = condition(get(argocd.cluster, "md", namespace, "web"), "Ready")
    assert ready["status"] == "True"
    assert resource_health(argocd, namespace, "ModelDeployment", "web") == {"status": "Healthy",
                                                                           "message": ready["message"]}
    assert resource_health(argocd, namespace, "ModelVersion", "v1")["status"] == "Healthy"
    assert_no_drift(argocd, namespace)


def test_canary_from_git_is_progressing_then_suspended_and_the_promote_action_finishes_it(
        argocd: ArgoCD, remote: GitRemote, namespace: str, models: ModelStore) -> None:
    v1, v2 = models.model("gitops-c1.onnx"), models.model("gitops-c2.onnx", scale=2.0)
    versions = (model_version("v1", v1), model_version("v2", v2, version="2.0.0"))
    start_app(argocd, remote, namespace, *versions, model_deployment("web", "v1", replicas=4, strategy=CANARY))
    wait_health(argocd, namespace, "Healthy")

    sha = remote.commit(f"{namespace}: canary to v2", folder(
        namespace, *versions, model_deployment("web", "v2", replicas=4, strategy=CANARY)))
    wait_synced(argocd, namespace, sha)
    wait_health(argocd, namespace, "Progressing")
    suspended = wait_health(argocd, namespace, "Suspended")
    assert_no_drift(argocd, namespace)
    assert "waits for promotion" in resource_health(argocd, namespace, "ModelDeployment", "web")["message"]

    listed = json.loads(argocd.cli("app", "actions", "list", namespace, "--kind", "ModelDeployment",
                                   "--resource-name", "web", "--namespace", namespace, "-o", "json").stdout)
    assert {a["Action"]: a["Disabled"] for a in listed}["promote"] is False
    argocd.cli("app", "actions", "run", namespace, "promote", "--kind", "ModelDeployment",
               "--resource-name", "web", "--namespace", namespace)

    wait_health(argocd, namespace, "Healthy")
    md = get(argocd.cluster, "md", namespace, "web")
    assert md["status"]["servingVersion"] == "v2" and suspended["status"]["sync"]["revision"] == sha
    assert_no_drift(argocd, namespace)


def test_broken_version_is_degraded_with_the_operators_message_while_synced_and_a_revert_heals_it(
        argocd: ArgoCD, remote: GitRemote, namespace: str, models: ModelStore) -> None:
    good = model_version("v1", models.model("gitops-b1.onnx"))
    start_app(argocd, remote, namespace, good, model_deployment("web", "v1", replicas=2))
    wait_health(argocd, namespace, "Healthy")

    broken = remote.commit(f"{namespace}: broken version", folder(
        namespace, model_version("bad", Artifact(models.model("gitops-b2.onnx").uri, "0" * 64), version="2.0.0"),
        model_deployment("web", "bad", replicas=2)))
    wait_synced(argocd, namespace, broken)

    degraded = wait_health(argocd, namespace, "Degraded")
    operator_says = condition(wait_until(argocd.cluster, "md", namespace, "web", "Degraded",
                                         lambda o: condition(o, "Degraded").get("status") == "True"), "Degraded")
    health = resource_health(argocd, namespace, "ModelDeployment", "web")
    assert health["status"] == "Degraded" and operator_says["message"] in health["message"]
    assert degraded["status"]["sync"]["status"] == "Synced"
    assert_no_drift(argocd, namespace)

    wait_synced(argocd, namespace, remote.revert(broken))
    wait_health(argocd, namespace, "Healthy")
    assert get(argocd.cluster, "md", namespace, "web")["status"]["servingVersion"] == "v1"
    assert not argocd.cluster.kubectl("get", "mv", "bad", "-n", namespace, "--ignore-not-found", "-o", "name")
    assert_no_drift(argocd, namespace)


@pytest.mark.usefixtures("gateway_api")
def test_http_route_weights_the_operator_writes_are_no_drift_with_the_documented_compare_options(
        argocd: ArgoCD, remote: GitRemote, namespace: str, models: ModelStore) -> None:
    """The route itself stays Progressing (no Gateway controller here), so the ModelDeployment's health is read."""
    steps = {"type": "Canary", "canary": {"steps": [{"weight": 30}, {"weight": 100}]}}
    traffic = {"httpRoute": {"name": "web-route"}}
    http_route = json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web-route"},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}})
    versions = (model_version("v1", models.model("gitops-r1.onnx")),
                model_version("v2", models.model("gitops-r2.onnx", scale=2.0), version="2.0.0"))
    sha = remote.commit(f"{namespace}: routed", folder(
        namespace, http_route, *versions, model_deployment("web", "v1", replicas=2, strategy=steps, traffic=traffic)))
    app = application(namespace, remote.url, f"apps/{namespace}", namespace)
    app["metadata"]["annotations"] = {"argocd.argoproj.io/compare-options": "ServerSideDiff=true"}
    app["spec"]["ignoreDifferences"] = IGNORE_BACKEND_REFS
    app["spec"]["syncPolicy"]["syncOptions"].append("RespectIgnoreDifferences=true")
    argocd.cluster.apply(json.dumps(app), NAMESPACE)
    wait_synced(argocd, namespace, sha)
    wait_resource_health(argocd, namespace, "ModelDeployment", "web", "Healthy")
    assert_no_drift(argocd, namespace)

    sha = remote.commit(f"{namespace}: canary to v2", folder(
        namespace, http_route, *versions, model_deployment("web", "v2", replicas=2, strategy=steps, traffic=traffic)))
    wait_synced(argocd, namespace, sha)
    wait_resource_health(argocd, namespace, "ModelDeployment", "web", "Suspended")

    weights = [(b["name"], b["weight"]) for b in get(argocd.cluster, "httproute", namespace, "web-route")
               ["spec"]["rules"][0]["backendRefs"]]
    assert weights == [("web-stable", 70), ("web-canary", 30)]
    assert_no_drift(argocd, namespace)


def test_chart_application_installs_the_operator_and_becomes_healthy(argocd: ArgoCD, remote: GitRemote,
                                                                     namespace: str) -> None:
    sha = remote.copy_tree(REPO / "charts/onnx-operator", "charts/onnx-operator", "the operator's chart")
    app = application(f"{namespace}-chart", remote.url, "charts/onnx-operator", namespace)
    # the images the real node has, and a namespace of its own to watch: real operator pods, touching
    # nothing of the other tests
    values = {**image_values(argocd.cluster.extra["images"]), "watchNamespaces[0]": namespace}
    app["spec"]["source"]["helm"] = {"releaseName": f"gitops-{namespace}", "parameters": [
        {"name": name, "value": value} for name, value in values.items()]}
    argocd.cluster.apply(json.dumps(app), NAMESPACE)
    try:
        wait_synced(argocd, app["metadata"]["name"], sha)
        wait_health(argocd, app["metadata"]["name"], "Healthy")
        deployment = get(argocd.cluster, "deployment", namespace, f"gitops-{namespace}-onnx-operator")
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"]
        assert_no_drift(argocd, app["metadata"]["name"])
    finally:  # cluster-scoped objects outlive the namespace (the CRDs are shared with the other tests)
        argocd.cluster.kubectl("delete", "clusterrole,clusterrolebinding", "-l",
                               f"app.kubernetes.io/instance=gitops-{namespace}", check=False)


def test_gitops_docs_page_is_what_the_test_bed_runs(argocd: ArgoCD) -> None:
    pinned = (REPO / "localcluster/argocd/versions.env").read_text().split("ARGOCD_VERSION=")[1].split()[0]
    text = (REPO / "docs" / "gitops.md").read_text()

    assert f"kubectl -n argocd patch configmap argocd-cm --patch-file {CM_PATCH.relative_to(REPO)}" in text
    assert "make argocd-bin" in text and f"**{pinned}**" in text
    version = subprocess.run([str(argocd.bin_dir / "argocd"), "version", "--client", "--short"],
                             capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"argocd: {pinned}+"), version


IGNORE_BACKEND_REFS = [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                        "jqPathExpressions": [".spec.rules[].backendRefs"]}]
