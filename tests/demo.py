"""`make demo`: the guided tour on the local control plane.

1. the control plane (built once, then cached), 2. the CRDs, the operator and a real ONNX model
served from a local HTTP endpoint, 3. v1 Ready, a canary to v2 shown live, a broken v3 rolled back
automatically, 4. one real inference against the runtime server, 5. what to try next.

    python -m tests.demo           # DEMO_FAST=1: no pauses (what the test runs)
    python -m tests.demo --stop    # stop the demo's processes and delete its namespace
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from onnx_operator.cli.render import render_status

from tests.cluster.localcluster import REPO, Cluster, free_port, wait_until
from tests.models import make_model

NS = "demo"
FAST = os.environ.get("DEMO_FAST") == "1"
CANARY = {"type": "Canary", "canary": {"steps": [{"weight": 33, "pause": "5s"}, {"weight": 66, "pause": "5s"},
                                                 {"weight": 100}]}}


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

    def kubectl(self, *args: str, input: str | None = None, show: bool = False) -> str:
        if show:
            print("$ kubectl " + " ".join(args), flush=True)
        out = self.cluster.kubectl(*args, input=input)
        if show:
            print(out, end="", flush=True)
        return out

    def md(self) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "md", "iris", "-n", NS, "-o", "json")))

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> int:
        log = (self.cluster.paths.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=REPO)
        self.cluster.adopt(name, proc.pid)
        return proc.pid

    # ---- steps --------------------------------------------------------------------------------
    def start(self) -> None:
        say("1. the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
        self.cluster.up()
        self.kubectl("get", "nodes", show=True)
        self.stop(quiet=True, wait=True)

    def operator_and_models(self) -> dict[str, tuple[str, str]]:
        say("2. CRDs, the operator, and real ONNX models served over HTTP on 127.0.0.1")
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), show=True)
        for crd in ("modelversions", "modeldeployments"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}.serving.onnx-operator.io")
        env = dict(os.environ, KUBECONFIG=str(self.cluster.paths.kubeconfig), PYTHONUNBUFFERED="1")
        self.spawn("demo-operator", [sys.executable, "-m", "onnx_operator", "--namespaces", NS,
                                     "--runtime-image", "localhost/onnx-operator/runtime:0.1.0"], env)
        print(f"operator running (logs: {self.cluster.paths.logs / 'demo-operator.log'})")
        models = self.work / "models"
        models.mkdir(parents=True, exist_ok=True)
        port = free_port()
        artifacts = {}
        for name, scale in (("v1", 1.0), ("v2", 1.5)):
            data = make_model(scale)
            (models / f"iris-{name}.onnx").write_bytes(data)
            artifacts[name] = (f"http://127.0.0.1:{port}/iris-{name}.onnx", hashlib.sha256(data).hexdigest())
        self.spawn("demo-models", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(models)])
        print(f"model registry: http://127.0.0.1:{port}/ ({', '.join(sorted(artifacts))})")
        if not self.kubectl("get", "namespace", NS, "--ignore-not-found", "-o", "name"):
            self.kubectl("create", "namespace", NS, show=True)
        return artifacts

    def apply(self, doc: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-n", NS, "-f", "-", input=json.dumps(doc))
        print(f"applied {doc['kind']} {doc['metadata']['name']}")

    @staticmethod
    def mv(name: str, version: str, art: tuple[str, str]) -> dict[str, Any]:
        return {"apiVersion": "serving.onnx-operator.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
                "spec": {"model": "iris", "version": version, "source": {"uri": art[0], "sha256": art[1]}}}

    @staticmethod
    def deployment(version: str, **extra: Any) -> dict[str, Any]:
        return {"apiVersion": "serving.onnx-operator.io/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": "iris"},
                "spec": {"modelVersion": version, "replicas": 3, "strategy": CANARY, **extra}}

    def watch(self, done: Any, timeout: float) -> dict[str, Any]:
        """The `kubectl model status --watch` view, refreshed until `done(md)`."""
        deadline, last = time.monotonic() + timeout, ""
        while True:
            md = self.md()
            view = "\n".join(render_status(md))
            if view != last:
                print("\n" + view, flush=True)
                last = view
            if done(md):
                return md
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: timed out waiting; see {self.cluster.paths.logs}")
            time.sleep(1)

    def rollouts(self, art: dict[str, tuple[str, str]]) -> None:
        say("3a. ModelVersion v1 and a ModelDeployment with 3 replicas")
        self.apply(self.mv("iris-v1", "1.0.0", art["v1"]))
        self.apply(self.deployment("iris-v1"))
        self.watch(lambda md: md.get("status", {}).get("phase") == "Ready", 180)
        self.kubectl("get", "models", "-n", NS, show=True)

        say("3b. v2 rolls out as a canary: 33% -> 66% -> 100% of the replicas")
        self.apply(self.mv("iris-v2", "2.0.0", art["v2"]))
        self.apply(self.deployment("iris-v2"))
        self.watch(lambda md: md.get("status", {}).get("servingVersion") == "iris-v2"
                   and md["status"].get("phase") == "Ready", 240)

        say("3c. a broken v3 (its pods never become Ready) is rolled back automatically")
        self.apply(self.mv("iris-v3", "3.0.0", art["v1"]))
        self.apply(self.deployment("iris-v3", progressDeadlineSeconds=15,
                                   podAnnotations={"kwok.onnx-operator.io/fail": "not-ready"}))
        md = self.watch(lambda md: any(c["type"] == "RolledBack" and c["status"] == "True"
                                       for c in md.get("status", {}).get("conditions", [])), 240)
        reason = next(c for c in md["status"]["conditions"] if c["type"] == "RolledBack")
        print(f"\nrolled back: {reason['reason']}: {reason['message']}")
        print(f"spec.modelVersion stays {md['spec']['modelVersion']} (the operator never rewrites the spec); "
              f"serving {md['status']['servingVersion']}")

    def inference(self, art: dict[str, tuple[str, str]]) -> None:
        say("4. one real inference against the runtime server serving v2")
        model_dir = self.work / "serve"
        subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", art["v2"][0], "--sha256",
                        art["v2"][1], "--dest", str(model_dir)], check=True, capture_output=True)
        port = free_port()
        use_image = not FAST and shutil.which("buildah") is not None
        serve = ["serve", "--model-dir", "/models" if use_image else str(model_dir), "--name", "iris",
                 "--version", "2.0.0", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(free_port())]
        if use_image:
            print("building the runtime image with buildah (first time: a few minutes)")
            subprocess.run([str(REPO / "runtime-image/build-image.sh"), "runtime"], check=True)
            image = "localhost/onnx-operator/runtime:0.1.0"
            ctr = subprocess.run(["buildah", "--storage-driver", "vfs", "from", image],
                                 check=True, capture_output=True, text=True).stdout.strip()
            args = ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "--network", "host",
                    "--user", "65532:65532", "-v", f"{model_dir}:/models:ro", ctr, "--",
                    "/opt/venv/bin/onnx-server", *serve]
            print("server: the runtime image, via buildah run")
        else:
            args = [sys.executable, "-m", "onnx_server.cli", *serve]
            print("server: the runtime server as a process (DEMO_FAST, or no buildah)")
        self.spawn("demo-server", args)
        url = f"http://127.0.0.1:{port}"
        wait_until("the runtime server", lambda: httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200, 120)
        request = {"id": "demo-1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                                "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}
        print(f"POST {url}/v2/models/iris/infer\n{json.dumps(request)}")
        resp = httpx.post(f"{url}/v2/models/iris/infer", json=request, timeout=30)
        resp.raise_for_status()
        print(f"HTTP {resp.status_code}\n{json.dumps(resp.json())}")
        self.cluster.release("demo-server")

    def next_steps(self) -> None:
        say("5. try next")
        kubectl = f"{self.cluster.paths.bin}/kubectl --kubeconfig {self.cluster.paths.kubeconfig}"
        print(f"""  {kubectl} get models -n {NS}
  KUBECONFIG={self.cluster.paths.kubeconfig} PATH={Path(sys.executable).parent}:$PATH kubectl model status iris -n {NS}
  KUBECONFIG=... kubectl model history iris -n {NS}      # the three rollouts and their results
  KUBECONFIG=... kubectl model rollback iris --to iris-v1 -n {NS}
Clean up: make demo-down""")

    def stop(self, quiet: bool = False, wait: bool = False) -> None:
        for name in ("demo-server", "demo-operator", "demo-models"):
            self.cluster.release(name)
        if self.cluster.running():
            self.cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", f"--wait={str(wait).lower()}",
                                 "--timeout=120s", check=False)
        shutil.rmtree(self.work, ignore_errors=True)
        if not quiet:
            print("demo stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stop", action="store_true", help="stop the demo's processes, delete its namespace")
    demo = Demo()
    if parser.parse_args().stop:
        demo.stop()
        return
    t0 = time.monotonic()
    demo.start()
    artifacts = demo.operator_and_models()
    demo.rollouts(artifacts)
    demo.inference(artifacts)
    demo.next_steps()
    print(f"\ndemo finished in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
