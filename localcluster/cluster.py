"""The local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes and
one real worker node (realnode.py), started as processes with state under `.cluster/`.

Addresses: the control plane's own ports on 127.0.0.1, the apiserver on the node IP 198.18.0.254
(pods reach it there), pods in 198.18.0.0/24, Services in 198.19.0.0/16; nothing else.

    python -m localcluster up      # idempotent: reuses a running cluster
    python -m localcluster down    # stops every process it started (by pid), removes state
    python -m localcluster status
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import hoststate, images, kwok, pki
from localcluster.realnode import NAME as NODE_NAME
from localcluster.realnode import NODE_IP, SERVICE_CIDR, RealNode

REPO = Path(__file__).resolve().parents[1]
# the Makefile's set-up phases (localcluster/phase.sh): their logs in .cluster/logs/ survive `down`
SETUP_PHASES = frozenset({"deps", "venv", "cluster-bin", "argocd-bin", "tools", "prometheus", "node-images",
                          "cluster", "docs", "image-runtime", "image-operator"})


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"


def default_paths() -> Paths:
    return Paths(Path(os.environ.get("ONNX_OPERATOR_CLUSTER_DIR", REPO / ".cluster")))


def log(msg: str) -> None:
    print(f"[cluster] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, proc_pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc_pid is not None and not pid_alive(proc_pid):
            raise RuntimeError(f"{what}: process {proc_pid} exited; see .cluster/logs/")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what} not ready within {timeout:.0f}s; see .cluster/logs/")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child counts as gone
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def https_ok(url: str, paths: Paths, client: str = "admin") -> bool:
    ctx = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(paths.pki / f"{client}.crt"), str(paths.pki / f"{client}.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
        return bool(resp.status == 200)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return bool(resp.status == 200)


class Cluster:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or default_paths()

    # ---- state -------------------------------------------------------------------------
    def read_state(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.paths.state.read_text()))
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        state = self.read_state()
        if not state:
            return False
        core = {k: v for k, v in self._pids().items() if not k.startswith("demo-")}
        if set(core) < COMPONENTS or not all(pid_alive(p) for p in core.values()):
            return False
        try:
            return https_ok(f"{state['server']}/readyz", self.paths)
        except Exception:
            return False

    # ---- lifecycle ---------------------------------------------------------------------
    def up(self) -> None:
        if self.running():
            built, imported = self._node().refresh_images()
            self._save(images=built)
            log(f"reusing the running cluster ({self.paths.kubeconfig})"
                + (f"; imported this checkout's {', '.join(imported)}" if imported else ""))
            return
        if self.read_state() or hoststate.recorded():
            log("found a partial cluster or a node's leftover host state: stopping it first")
            self.down(keep_bin=True)
        t0 = time.monotonic()
        self._build()
        t_built = time.monotonic()
        self._start()
        log(
            f"control plane ready: start took {time.monotonic() - t_built:.1f}s "
            f"(build/check {t_built - t0:.1f}s); kubeconfig {self.paths.kubeconfig}"
        )

    def _build(self) -> None:
        subprocess.run([str(REPO / "localcluster/build.sh"), str(self.paths.bin)], check=True)

    def _spawn(self, name: str, args: list[str], pids: dict[str, int], env: dict[str, str] | None = None) -> int:
        logf = open(self.paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
        logf.close()
        pids[name] = proc.pid
        self._save(pids)
        return proc.pid

    def _pids(self) -> dict[str, int]:
        """The processes recorded so far, by name, in start order."""
        return {str(k): int(v) for k, v in dict((self.read_state() or {}).get("pids", {})).items()}  # type: ignore[call-overload]

    def _save(self, pids: dict[str, int] | None = None, **extra: object) -> None:
        """Writes `extra` (and `pids`, when given) into the state file, keeping the rest."""
        state = self.read_state() or {}
        state.update(extra)
        if pids is not None:
            state["pids"] = pids
        self.paths.state.write_text(json.dumps(state, indent=2))

    def _start(self) -> None:
        p = self.paths
        for d in (p.logs, p.pki, p.root / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        node = self._node()
        node.prepare_host()
        ca = pki.make_ca(p.pki)
        serving = pki.issue(
            p.pki, ca, "apiserver", "kube-apiserver",
            server_names=("127.0.0.1", NODE_IP, "localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "198.19.0.1"),
        )
        kubelet_client = pki.issue(p.pki, ca, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                   ("system:masters",))
        admin = pki.issue(p.pki, ca, "admin", "admin", ("system:masters",))
        kcm = pki.issue(p.pki, ca, "controller-manager", "system:kube-controller-manager")
        sched = pki.issue(p.pki, ca, "scheduler", "system:kube-scheduler")
        kwok_pair = pki.issue(p.pki, ca, "kwok", "kwok-controller", ("system:masters",))
        sa_key, sa_pub = pki.make_service_account_key(p.pki)

        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")}
        server = f"https://{NODE_IP}:{ports['apiserver']}"
        pids: dict[str, int] = {}
        self._save(pids, server=server, ports=ports)

        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        pid = self._spawn("etcd", [
            str(p.bin / "etcd"), "--name=local", f"--data-dir={p.root / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}", "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296", "--log-level=warn",
        ], pids)
        wait_until("etcd", lambda: http_ok(f"{etcd_url}/health"), 60, pid)

        policy = p.root / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        pid = self._spawn("kube-apiserver", [
            str(p.bin / "kube-apiserver"),
            f"--etcd-servers={etcd_url}", f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            f"--audit-policy-file={policy}", f"--audit-log-path={p.audit_log}",
            "--audit-log-format=json", "--audit-log-maxsize=1000", "--audit-log-maxbackup=2",
            "--audit-log-mode=blocking",
            # API priority and fairness as in any production cluster: the operator bench limits the
            # operator's own user with a FlowSchema to make the API server answer 429
            "--enable-priority-and-fairness=true",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={kubelet_client.cert}", f"--kubelet-client-key={kubelet_client.key}",
        ], pids)
        wait_until("kube-apiserver", lambda: https_ok(f"{server}/readyz", p), 120, pid)

        kubeconfigs = {
            "admin": pki.write_kubeconfig(p.kubeconfig, server, ca, admin, "admin"),
            "kcm": pki.write_kubeconfig(p.pki / "controller-manager.kubeconfig", server, ca, kcm,
                                        "system:kube-controller-manager"),
            "sched": pki.write_kubeconfig(p.pki / "scheduler.kubeconfig", server, ca, sched,
                                          "system:kube-scheduler"),
            "kwok": pki.write_kubeconfig(p.pki / "kwok.kubeconfig", server, ca, kwok_pair, "kwok-controller"),
        }
        self._spawn("kube-controller-manager", [
            str(p.bin / "kube-controller-manager"),
            f"--kubeconfig={kubeconfigs['kcm']}",
            f"--authentication-kubeconfig={kubeconfigs['kcm']}",
            f"--authorization-kubeconfig={kubeconfigs['kcm']}",
            f"--root-ca-file={ca.cert}", f"--service-account-private-key-file={sa_key}",
            f"--cluster-signing-cert-file={ca.cert}", f"--cluster-signing-key-file={ca.key}",
            "--use-service-account-credentials=true", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kcm']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--horizontal-pod-autoscaler-sync-period=5s",
            *CONTROLLER_MANAGER_SCALE,
        ], pids)
        self._spawn("kube-scheduler", [
            str(p.bin / "kube-scheduler"),
            f"--kubeconfig={kubeconfigs['sched']}",
            f"--authentication-kubeconfig={kubeconfigs['sched']}",
            f"--authorization-kubeconfig={kubeconfigs['sched']}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
            *SCHEDULER_SCALE,
        ], pids)
        module_dir = Path((p.bin / "kwok-module-dir").read_text().strip())
        stages = kwok.write_config(module_dir, p.root / "kwok-stages.yaml")
        self._spawn("kwok", [str(p.bin / "kwok"), *kwok.args(kubeconfigs["kwok"], stages, ports["kwok"])], pids)
        self._create_nodes()
        t_node = time.monotonic()
        built = node.start(ca, server)
        self._save(images=built)
        self._wait_usable()
        log(f"real node {NODE_NAME} Ready {time.monotonic() - t_node:.1f}s after its start began")

    def _node(self) -> RealNode:
        def spawn(name: str, args: list[str]) -> int:
            return self._spawn(name, args, self._pids())

        return RealNode(self.paths.root, self.paths.bin, spawn, wait_until)

    def images(self) -> dict[str, str]:
        """The images the real node has: pause, runtime and operator (names with their source hash)."""
        return dict((self.read_state() or {}).get("images", {}))  # type: ignore[call-overload]

    def adopt(self, name: str, pid: int) -> None:
        """Records a process started beside the cluster (the demo's operator) so `down` stops it."""
        self._save({**self._pids(), name: pid})

    def release(self, name: str) -> int | None:
        """Stops an adopted process and forgets it."""
        pids = self._pids()
        pid = pids.pop(name, None)
        if pid is not None:
            stop_pid(pid, name)
            self._save(pids)
        return pid

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for another identity (a client certificate for `user` in `groups`)."""
        ca = pki.make_ca(self.paths.pki)
        pair = pki.issue(self.paths.pki, ca, f"user-{user}", user, groups)
        state = self.read_state() or {}
        return pki.write_kubeconfig(self.paths.pki / f"user-{user}.kubeconfig", str(state["server"]), ca, pair, user)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        out = subprocess.run(
            [str(self.paths.bin / "kubectl"), f"--kubeconfig={self.paths.kubeconfig}", *args],
            check=False, capture_output=True, text=True, input=input,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def _create_nodes(self) -> None:
        docs = kwok.node_manifests()
        wait_until("node API", lambda: bool(self.kubectl("apply", "-f", "-", input="\n---\n".join(docs))), 60)

    def _wait_usable(self) -> None:
        def nodes_ready() -> bool:
            out = self.kubectl("get", "nodes", "-o",
                               'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}')
            return out.split() == ["True"] * (kwok.NODE_COUNT + 1)

        wait_until(f"{kwok.NODE_COUNT} kwok nodes and the real node Ready", nodes_ready, 120)
        wait_until("default ServiceAccount",
                   lambda: bool(self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name")), 120)

    def down(self, keep_bin: bool = True) -> None:
        node = self._node()
        # stop in reverse start order: clients first, etcd last; containers go before containerd
        for name, pid in reversed(list(self._pids().items())):
            if name == "containerd":
                node.remove_workloads()
            stop_pid(pid, name)
        node.clean()
        for child in ("etcd", "pki", "jobs"):
            shutil.rmtree(self.paths.root / child, ignore_errors=True)
        for entry in self.paths.logs.glob("*") if self.paths.logs.is_dir() else ():
            if entry.name not in {f"{phase}.log" for phase in SETUP_PHASES}:  # set-up logs outlive the cluster
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
        for f in ("state.json", "kubeconfig", "audit-policy.yaml", "kwok-stages.yaml"):
            (self.paths.root / f).unlink(missing_ok=True)
        if not keep_bin:
            shutil.rmtree(self.paths.bin, ignore_errors=True)
        log("cluster stopped, host state restored, state removed")


def stop_pid(pid: int, name: str, timeout: float = 15) -> None:
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        log(f"{name} ({pid}) did not stop on SIGTERM: killing")
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


# Client rates and worker counts of a large production control plane. The defaults (kube-api-qps 20,
# burst 30; 5 Deployment and ReplicaSet workers) make 1,000 Deployments' ReplicaSets and pods alone
# take minutes; 1,000 Deployments need ~6 writes each from the controller manager (ReplicaSet,
# pod, statuses), so 200 requests/s (burst 400) and 50 workers keep it at seconds.
CONTROLLER_MANAGER_SCALE = (
    "--kube-api-qps=200", "--kube-api-burst=400",
    "--concurrent-deployment-syncs=50", "--concurrent-replicaset-syncs=50",
    "--concurrent-gc-syncs=50", "--concurrent-service-endpoint-syncs=20",
    "--concurrent-job-syncs=20",
)
# the scheduler binds one pod per request: 200/s (default 50, burst 100)
SCHEDULER_SCALE = ("--kube-api-qps=200", "--kube-api-burst=400")

COMPONENTS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "containerd", "kubelet",
              "kube-proxy"}

# identities in this group get their reads (get, list) in the audit log too: the operator bench counts them
READS_AUDITED_GROUP = "onnx-operator:reads-audited"
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [get, list]
  userGroups: [{READS_AUDITED_GROUP}]
- level: None
  verbs: [get, list, watch]
- level: Metadata
"""



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "images"],
                        help="images: build (or reuse) the real node's images without starting anything")
    parser.add_argument("--purge", action="store_true", help="down: also remove the built binaries")
    args = parser.parse_args(argv)
    cluster = Cluster()
    if args.command == "up":
        cluster.up()
    elif args.command == "images":
        print("\n".join(images.node_images(cluster.paths.bin / "pause").values()))
    elif args.command == "down":
        cluster.down(keep_bin=not args.purge)
    else:
        ok = cluster.running()
        print("running" if ok else "not running")
        return 0 if ok else 1
    return 0
