"""A real Argo CD next to the local control plane: Redis (Debian), the repo server, the application
controller and the API server (one binary built by `make argocd-bin`), as processes on 127.0.0.1.

Argo CD runs out of cluster the way its own Procfile does (ARGOCD_FAKE_IN_CLUSTER: the in-cluster
destination `https://kubernetes.default.svc` is the kubeconfig's cluster). Its CRDs and base config
maps are applied from the module it was built from, then our `argocd-cm` patch as docs/gitops.md says.
The API server runs with `--disable-auth` only so that the `argocd` CLI can run resource actions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.cluster import free_port, http_ok
from localcluster.harness import ClusterHandle, terminate, wait_for

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "argocd"
CM_PATCH = REPO / "examples" / "argocd" / "argocd-cm-patch.yaml"


def resident_mib(pid: int) -> float:
    """Resident memory of a running process in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ArgoCD:
    """The running Argo CD: its processes, where the API server listens, the CLI."""

    cluster: ClusterHandle
    work: Path
    bin_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        missing = [b for b in ("argocd", "helm") if not (self.bin_dir / b).exists()]
        if missing or not shutil.which("redis-server") or not shutil.which("git"):
            raise RuntimeError(f"missing {missing or 'redis-server/git'}: run `make deps tools argocd-bin`")
        self.install_manifests()
        redis = f"127.0.0.1:{free_port()}"
        self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", redis.split(":")[1],
                             "--save", "", "--appendonly", "no", "--dir", str(self.work)])
        wait_for("redis", lambda: subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", redis.split(":")[1],
                                                  "ping"], capture_output=True, text=True).stdout.strip() == "PONG")
        repo_server, repo_metrics = free_port(), free_port()
        self.spawn("argocd-repo-server", [
            "--address", "127.0.0.1", "--port", str(repo_server), "--disable-tls",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(repo_metrics), "--redis", redis])
        wait_for("repo server", lambda: http_ok(f"http://127.0.0.1:{repo_metrics}/metrics"), timeout=60)
        repo = ["--repo-server", f"127.0.0.1:{repo_server}", "--repo-server-plaintext", "--redis", redis]
        api, api_metrics = free_port(), free_port()
        self.spawn("argocd-server", [
            *self.kube_flags(), *repo, "--address", "127.0.0.1", "--port", str(api), "--insecure",
            "--disable-auth", "--metrics-address", "127.0.0.1", "--metrics-port", str(api_metrics),
            "--dex-server", "http://127.0.0.1:1"])
        self.server = f"127.0.0.1:{api}"
        wait_for("API server", lambda: http_ok(f"http://{self.server}/healthz"), timeout=90)
        controller_metrics = free_port()  # v3.2.11's controller has no metrics address flag: it binds 0.0.0.0
        self.spawn("argocd-application-controller", [
            *self.kube_flags(), *repo, "--commit-server", f"127.0.0.1:{free_port()}",
            "--metrics-port", str(controller_metrics), "--app-resync", "20", "--self-heal-timeout-seconds", "2"])
        wait_for("application controller", lambda: http_ok(f"http://127.0.0.1:{controller_metrics}/metrics"),
                 timeout=90)
        wait_for("default AppProject", lambda: self.cluster.kubectl(
            "get", "appproject", "default", "-n", NAMESPACE, "--ignore-not-found", "-o", "name"), timeout=60)

    def install_manifests(self) -> None:
        """Argo CD's CRDs and config maps as a user installs them, then our argocd-cm patch."""
        if not self.cluster.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name"):
            self.cluster.create_namespace(NAMESPACE)
        self.cluster.kubectl("apply", "--server-side", "-f", str(self.bin_dir / "argocd-crds"))
        wait_for("Argo CD CRDs served", lambda: {"applications", "appprojects"} <= set(self.cluster.kubectl(
            "api-resources", "--api-group=argoproj.io", "-o", "name").replace(".argoproj.io", "").split()))
        self.cluster.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", str(self.bin_dir / "argocd-config"))
        self.cluster.kubectl("-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--patch-file", str(CM_PATCH))

    def kube_flags(self) -> list[str]:
        return ["--kubeconfig", str(self.cluster.kubeconfig), "--namespace", NAMESPACE]

    def spawn(self, name: str, args: list[str]) -> None:
        for sub in ("tls", "ssh", "gpg"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, KUBECONFIG=str(self.cluster.kubeconfig), ARGOCD_FAKE_IN_CLUSTER="true",
                   ARGOCD_GPG_ENABLED="false", ARGOCD_TLS_DATA_PATH=str(self.work / "tls"),
                   ARGOCD_SSH_DATA_PATH=str(self.work / "ssh"), ARGOCD_GNUPGHOME=str(self.work / "gpg"),
                   HOSTNAME="argocd-application-controller-0", PATH=f"{self.bin_dir}:{os.environ['PATH']}")
        command = args if name == "redis" else [str(self.bin_dir / name), *args]
        with (self.work / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                cwd=self.work, start_new_session=True)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            terminate(self.procs.pop(name), timeout=20)

    def memory_mib(self) -> dict[str, float]:
        return {name: resident_mib(p.pid) for name, p in self.procs.items() if p.poll() is None}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.work / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- what users do -----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The `argocd` CLI against the API server."""
        out = subprocess.run([str(self.bin_dir / "argocd"), *args, "--server", self.server, "--plaintext",
                              "--config", str(self.work / "cli-config")],
                             capture_output=True, text=True, timeout=120, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"argocd {' '.join(args)}: {out.stderr.strip()}")
        return out

    def app(self, name: str) -> dict[str, Any]:
        return dict(self.cluster.kubectl_json("get", "application", name, "-n", NAMESPACE))

    def refresh(self, name: str) -> None:
        """What a Git webhook does: ask the controller to compare with the repository now."""
        self.cluster.kubectl("annotate", "application", name, "-n", NAMESPACE,
                             "argocd.argoproj.io/refresh=normal", "--overwrite")


class GitRemote:
    """A local Git repository as Argo CD's remote (file://), with a working clone to commit from."""

    def __init__(self, root: Path) -> None:
        self.bare, self.clone = root / "remote.git", root / "clone"
        self.git("init", "--bare", "-b", "main", str(self.bare), cwd=root)
        self.git("clone", str(self.bare), str(self.clone), cwd=root)
        for key, value in (("user.name", "GitOps Test"), ("user.email", "gitops@example.test")):
            self.git("config", key, value)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return subprocess.run(["git", *args], cwd=cwd or self.clone, capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()

    def commit(self, message: str, files: dict[str, str]) -> str:
        """Writes `files` (path -> content; empty content removes the file), commits, pushes; the sha."""
        for rel, content in files.items():
            path = self.clone / rel
            if content:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
            elif path.exists():
                path.unlink()
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")

    def revert(self, sha: str) -> str:
        self.git("revert", "--no-edit", sha)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")

    def copy_tree(self, src: Path, rel: str, message: str) -> str:
        shutil.copytree(src, self.clone / rel, dirs_exist_ok=True)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD")
