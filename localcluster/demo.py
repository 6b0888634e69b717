"""`make demo`: the guided tour on the local cluster's real node.

1. the cluster: control plane, kwok nodes and one real worker node (containerd, kubelet, kube-proxy);
2. the model store (an HTTP server on the node IP) and the operator installed with its Helm chart,
   running as a real pod;
3. `kubectl apply -f examples/basic/`: scikit-learn's iris model (shipped in the onnxruntime wheel) is
   verified by a real Job, real pods fetch and serve it, one inference through the Service;
4. v2 rolls out as a canary while a prober sends requests through the Service: requests sent,
   failed, and the share answered by each version, live;
5. a broken v3 (it loads, but every run fails, so its pods never become Ready) is rolled back
   automatically; the prober's totals.

Nothing runs outside the cluster but the prober and the model store.

    python -m localcluster.demo           # DEMO_FAST=1: no pauses (what the test runs)
    python -m localcluster.demo --stop    # stop the demo's processes and uninstall what it installed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from onnx_operator.cli.render import render_status

from localcluster.chart import helm_install_operator, helm_uninstall
from localcluster.cluster import REPO, Cluster, wait_until
from localcluster.model_store import STORE, STORE_PORT, write
from localcluster.models import iris_model, make_failing_model
from localcluster.prober import Prober
from localcluster.realnode import NODE_IP

NS = "demo"
OPERATOR_NS = "onnx-operator"
FAST = os.environ.get("DEMO_FAST") == "1"
GROUP = "serving.onnx-operator.io/v1alpha1"
CANARY = {"type": "Canary", "canary": {"steps": [{"weight": 34, "pause": "15s"}, {"weight": 67, "pause": "15s"},
                                                 {"weight": 100}]}}
IRIS_ROWS = [[5.1, 3.5], [6.7, 3.0], [4.9, 1.0]]  # the model's input is fixed at [3, 2]


def say(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)
    if not FAST:
        if sys.stdin.isatty():
            input("   (press Enter) ")
        else:
            time.sleep(1)


class Demo:
    def __init__(self) -> None:
        self.cluster = Cluster()
        self.work = self.cluster.paths.root / "demo"
        self.helm = self.cluster.paths.bin / "helm"

    def kubectl(self, *args: str, input: str | None = None, show: bool = False) -> str:
        if show:
            print("$ kubectl " + " ".join(args), flush=True)
        out = self.cluster.kubectl(*args, input=input)
        if show:
            print(out, end="", flush=True)
        return out

    def md(self) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "md", "iris", "-n", NS, "-o", "json")))

    def spawn(self, name: str, args: list[str]) -> int:
        log = (self.cluster.paths.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO)
        self.cluster.adopt(name, proc.pid)
        return proc.pid

    # ---- steps --------------------------------------------------------------------------------
    def start(self) -> None:
        say("1. the local cluster: control plane, 3 kwok nodes (tainted) and one real node")
        self.cluster.up()
        self.stop(quiet=True)
        self.kubectl("get", "nodes", "-o", "wide", show=True)

    def model_store(self) -> None:
        say(f"2a. the model store: an HTTP server on the node IP ({STORE})")
        root = self.work / "models"
        files = {"iris/1.0.0/model.onnx": iris_model(), "iris/2.0.0/model.onnx": iris_model(retrained=True),
                 "iris/3.0.0/model.onnx": make_failing_model("float_input", features=2)}
        for rel, sha in write(root, files).items():
            print(f"  {STORE}/{rel}  sha256 {sha}")
        pid = self.spawn("demo-models", [sys.executable, "-m", "http.server", str(STORE_PORT), "--bind", NODE_IP,
                                         "--directory", str(root)])
        wait_until("the model store", lambda: httpx.get(f"{STORE}/iris/1.0.0/model.onnx", timeout=2)
                   .status_code == 200, 30, pid)

    def operator(self) -> None:
        say("2b. the operator, installed with its Helm chart: a real pod on the real node")
        images = self.cluster.images()
        print(f"$ helm upgrade --install onnx-operator charts/onnx-operator -n {OPERATOR_NS} --wait "
              f"--set image.repository=...,image.tag=...,runtimeImage={images['runtime']}")
        helm_install_operator(self.helm, self.cluster.paths.kubeconfig, images, OPERATOR_NS)
        self.kubectl("get", "pods", "-n", OPERATOR_NS, "-o", "wide", show=True)

    def first_model(self) -> str:
        say("3. kubectl apply -f examples/basic/ : iris 1.0.0, three replicas")
        if not self.kubectl("get", "namespace", NS, "--ignore-not-found", "-o", "name"):
            self.kubectl("create", "namespace", NS, show=True)
        self.kubectl("apply", "--server-side", "-n", NS, "-f", str(REPO / "examples/basic"), show=True)
        self.watch(lambda md: md.get("status", {}).get("phase") == "Ready", 300)
        self.kubectl("get", "modelversions,pods", "-n", NS, "-o", "wide", show=True)
        ip = self.kubectl("get", "service", "iris", "-n", NS, "-o", "jsonpath={.spec.clusterIP}")
        url = f"http://{ip}/v2/models/iris/infer"
        request = {"id": "demo-1", "inputs": [{"name": "float_input", "shape": [3, 2], "datatype": "FP32",
                                                "data": [v for row in IRIS_ROWS for v in row]}]}
        print(f"\nPOST {url}   (the Service's ClusterIP, through kube-proxy)\n{json.dumps(request)}")
        resp = httpx.post(url, json=request, timeout=30)
        print(f"HTTP {resp.status_code}\n{json.dumps(resp.json(), indent=1)[:1500]}")
        resp.raise_for_status()
        return f"http://{ip}"

    def apply(self, doc: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-n", NS, "-f", "-", input=json.dumps(doc))
        print(f"applied {doc['kind']} {doc['metadata']['name']}")

    def model_version(self, version: str) -> dict[str, Any]:
        data = (self.work / "models" / "iris" / version / "model.onnx").read_bytes()
        return {"apiVersion": GROUP, "kind": "ModelVersion", "metadata": {"name": f"iris-{version.replace('.', '-')}"},
                "spec": {"model": "iris", "version": version, "source": {
                    "uri": f"{STORE}/iris/{version}/model.onnx", "sha256": hashlib.sha256(data).hexdigest()}}}

    def deployment(self, mv: str, **extra: Any) -> dict[str, Any]:
        return {"apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": "iris"},
                "spec": {"modelVersion": mv, "replicas": 3, "strategy": CANARY, **extra}}

    def watch(self, done: Any, timeout: float, prober: Prober | None = None) -> dict[str, Any]:
        """The `kubectl model status` view when it changes, and the prober's line every 2 s."""
        deadline, last, next_line = time.monotonic() + timeout, "", 0.0
        while True:
            md = self.md()
            view = "\n".join(render_status(md))
            if view != last:
                print("\n" + view, flush=True)
                last = view
            if prober and time.monotonic() >= next_line:
                print(f"  {prober.report().summary(window=5)}", flush=True)
                next_line = time.monotonic() + 2
            if done(md):
                return md
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: timed out waiting; see {self.cluster.paths.logs}")
            time.sleep(0.5)

    def rollouts(self, base_url: str) -> None:
        say("4. iris 2.0.0 rolls out as a canary (34% -> 67% -> 100% of the pods) under live traffic")
        body = {"inputs": [{"name": "float_input", "shape": [3, 2], "datatype": "FP32",
                            "data": [v for row in IRIS_ROWS for v in row]}]}
        # a connection per request: kube-proxy balances connections, so each request is placed anew
        prober = Prober(base_url, "iris", rate=20.0, max_seconds=900, max_requests=20_000, body=body)
        prober.start()
        try:
            self.apply(self.model_version("2.0.0"))
            self.apply(self.deployment("iris-2-0-0"))
            self.watch(lambda md: md.get("status", {}).get("servingVersion") == "iris-2-0-0"
                       and md["status"].get("phase") == "Ready", 300, prober)
            print(f"  {prober.report().summary(window=5)}")

            say("5. a broken iris 3.0.0: it loads, but every run fails, so its pods never become Ready")
            self.apply(self.model_version("3.0.0"))
            self.apply(self.deployment("iris-3-0-0", progressDeadlineSeconds=30))
            md = self.watch(lambda md: any(c["type"] == "RolledBack" and c["status"] == "True"
                                           for c in md.get("status", {}).get("conditions", [])), 300, prober)
            reason = next(c for c in md["status"]["conditions"] if c["type"] == "RolledBack")
            print(f"\nrolled back: {reason['reason']}: {reason['message']}")
            print(f"spec.modelVersion stays {md['spec']['modelVersion']} (the operator never rewrites the spec); "
                  f"serving {md['status']['servingVersion']}")
            time.sleep(2)
        finally:
            report = prober.stop()
        mix = ", ".join(f"{v}: {n}" for v, n in sorted(report.versions.items()))
        print(f"\nprober totals: {report.total} sent, {report.failed} failed; answered by {mix}; "
              f"p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms")
        if report.failed:
            raise SystemExit(f"demo: {report.describe_failures()}")

    def next_steps(self) -> None:
        say("6. try next")
        kubectl = f"{self.cluster.paths.bin}/kubectl --kubeconfig {self.cluster.paths.kubeconfig}"
        print(f"""  {kubectl} get models,pods -n {NS} -o wide
  KUBECONFIG={self.cluster.paths.kubeconfig} PATH={Path(sys.executable).parent}:$PATH kubectl model status iris -n {NS}
  KUBECONFIG=... kubectl model history iris -n {NS}      # the rollouts and their results
  KUBECONFIG=... kubectl model rollback iris --to iris-1-0-0 -n {NS}
Clean up: make demo-down""")

    def stop(self, quiet: bool = False) -> None:
        self.cluster.release("demo-models")
        if self.cluster.running():
            self.cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=120s",
                                 check=False)
            if self.helm.exists():
                helm_uninstall(self.helm, self.cluster.paths.kubeconfig, OPERATOR_NS)
        if not quiet:
            print("demo stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="stop the demo's processes, uninstall the operator")
    demo = Demo()
    if parser.parse_args().stop:
        demo.stop()
        return
    t0 = time.monotonic()
    demo.start()
    demo.model_store()
    demo.operator()
    base_url = demo.first_model()
    demo.rollouts(base_url)
    demo.next_steps()
    print(f"\ndemo finished in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
