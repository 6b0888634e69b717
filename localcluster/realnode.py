"""One real worker node beside the kwok nodes: containerd + runc (Debian), the CNI bridge plugin,
and a kubelet and kube-proxy built from the same Kubernetes module as the control plane.

Pods land here by default (the kwok nodes are tainted). The node's IP is 198.18.0.254 on `lo`,
pods get 198.18.0.2-127 on the bridge `onnxbr0` (gateway .1), Services live in 198.19.0.0/16, and the
host routes that range to `lo` so stray traffic never leaves the machine.

Fixed paths (the runtime's socket folder under /run, the kubelet root under /var/lib) make this one
node per machine; every host change is recorded first and undone by `stop` (see hoststate.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from localcluster import hoststate, images, pki

NAME = "real-node"
NODE_IP = hoststate.NODE_IP
POD_CIDR = "198.18.0.0/24"
POD_GATEWAY = "198.18.0.1"
SERVICE_CIDR = "198.19.0.0/16"
RUN = hoststate.RUN_DIR
CONTAINERD_SOCK = RUN / "containerd" / "containerd.sock"
KUBELET_ROOT = Path("/var/lib/onnx-operator-node/kubelet")
NODE_LABEL = "onnx-operator.io/node"
CACHE = Path(os.environ.get("ONNX_OPERATOR_CACHE", Path.home() / ".cache/onnx-operator"))
# kept between runs: images already imported survive a restart (a warm start skips the import)
CONTAINERD_ROOT = CACHE / "containerd" / "root"


def log(msg: str) -> None:
    print(f"[real-node] {msg}", flush=True)


def ctr_command() -> list[str]:
    return ["ctr", "--address", str(CONTAINERD_SOCK)]


class RealNode:
    """Starts and stops the node's processes; `spawn` and `wait_until` come from the control plane."""

    def __init__(self, root: Path, bin_dir: Path, spawn: Callable[[str, list[str]], int],
                 wait_until: Callable[..., None]) -> None:
        self.root, self.bin, self.spawn, self.wait_until = root / "node", bin_dir, spawn, wait_until

    # ---- start ---------------------------------------------------------------------------------
    def prepare_host(self) -> None:
        """The host changes the control plane needs too (the apiserver listens on the node IP)."""
        if shutil.which("containerd") is None or shutil.which("runc") is None:
            raise RuntimeError("containerd and runc are missing: run `make deps` (Debian packages)")
        hoststate.record()
        hoststate.add_node_address()

    def start(self, ca: pki.KeyPair, server: str) -> dict[str, str]:
        """Starts containerd, imports the images, starts kubelet and kube-proxy; returns image names."""
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        hoststate.make_cgroups()
        built = images.node_images(self.bin / "pause")
        t_images = time.monotonic()
        self._start_containerd(built["pause"])
        imported = self._import(built)
        t_import = time.monotonic()
        self._write_cni()
        kubelet_cfg = self._kubelet_config(ca)
        node_pair = pki.issue(self.root, ca, "kubelet", f"system:node:{NAME}", ("system:nodes",))
        kubeconfig = pki.write_kubeconfig(self.root / "kubelet.kubeconfig", server, ca, node_pair,
                                          f"system:node:{NAME}")
        KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
        self.spawn("kubelet", [
            str(self.bin / "kubelet"), f"--config={kubelet_cfg}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={KUBELET_ROOT}", f"--hostname-override={NAME}", f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=real", "--v=1",
        ])
        proxy_pair = pki.issue(self.root, ca, "kube-proxy", "system:kube-proxy")
        proxy_kubeconfig = pki.write_kubeconfig(self.root / "kube-proxy.kubeconfig", server, ca, proxy_pair,
                                                "system:kube-proxy")
        self.spawn("kube-proxy", [str(self.bin / "kube-proxy"),
                                  f"--config={self._proxy_config(proxy_kubeconfig)}", "--v=1"])
        self._route_services()
        log(f"node processes started in {time.monotonic() - t0:.1f}s (images built or found {t_images - t0:.1f}s, "
            f"containerd + images {t_import - t_images:.1f}s{', imported ' + ', '.join(imported) if imported else ''})")
        return built

    def refresh_images(self) -> tuple[dict[str, str], list[str]]:
        """Builds the images of this checkout (cached by source hash) and imports the ones containerd
        lacks; returns their names and which were imported. Cheap when nothing changed."""
        built = images.node_images(self.bin / "pause")
        return built, self._import(built)

    @staticmethod
    def _import(built: dict[str, str]) -> list[str]:
        """Imports the images containerd lacks (and drops older `src-` ones); returns those imported."""
        store = images.ContainerdImages(ctr_command(), CACHE / "containerd" / "imported.json")
        imported = [name for name in built.values() if store.ensure(name)]
        store.prune(set(built.values()))
        return imported

    def _start_containerd(self, pause: str) -> None:
        state = RUN / "containerd"
        state.mkdir(parents=True, exist_ok=True)
        CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
        config = RUN / "containerd.toml"
        config.write_text(CONTAINERD_CONFIG % {
            "root": CONTAINERD_ROOT, "state": state / "state", "sock": CONTAINERD_SOCK, "pause": pause,
            "cni_conf": RUN / "cni"})
        pid = self.spawn("containerd", ["containerd", f"--config={config}"])
        self.wait_until("containerd", lambda: subprocess.run(
            [*ctr_command(), "version"], capture_output=True, check=False).returncode == 0, 60, pid)

    def _write_cni(self) -> None:
        (RUN / "cni").mkdir(parents=True, exist_ok=True)
        (RUN / "cni" / "10-onnx-node.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "onnx-node",
            "plugins": [{
                "type": "bridge", "bridge": hoststate.BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{
                    "subnet": POD_CIDR, "rangeStart": "198.18.0.2", "rangeEnd": "198.18.0.127",
                    "gateway": POD_GATEWAY}]], "routes": [{"dst": SERVICE_CIDR}]},
            }, {"type": "loopback"}],
        }, indent=2))

    def _kubelet_config(self, ca: pki.KeyPair) -> Path:
        serving = pki.issue(self.root, ca, "kubelet-serving", f"system:node:{NAME}", ("system:nodes",),
                            server_names=(NODE_IP, NAME))
        resolv = self.root / "resolv.conf"
        resolv.write_text("# pods get no DNS server: the cluster has none and the host's is not theirs\n")
        ports = self._ports()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{hoststate.CGROUP_ROOT}",
            "failSwapOn": False, "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
            "address": NODE_IP, "port": ports["kubelet"], "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet_healthz"], "readOnlyPort": 0,
            "tlsCertFile": str(serving.cert), "tlsPrivateKeyFile": str(serving.key),
            "authentication": {"x509": {"clientCAFile": str(ca.cert)}, "webhook": {"enabled": True},
                               "anonymous": {"enabled": False}},
            "authorization": {"mode": "Webhook"},
            "resolvConf": str(resolv), "clusterDomain": "cluster.local",
            "protectKernelDefaults": False, "serializeImagePulls": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "podCIDR": POD_CIDR, "maxPods": 110, "nodeStatusUpdateFrequency": "4s",
            "shutdownGracePeriod": "0s", "registerNode": True,
        }
        path = self.root / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _proxy_config(self, kubeconfig: Path) -> Path:
        ports = self._ports()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)}, "hostnameOverride": NAME,
            "mode": "iptables", "clusterCIDR": POD_CIDR, "detectLocalMode": "ClusterCIDR",
            "bindAddress": NODE_IP, "healthzBindAddress": f"127.0.0.1:{ports['proxy_healthz']}",
            "metricsBindAddress": f"127.0.0.1:{ports['proxy_metrics']}",
            "nodePortAddresses": [f"{NODE_IP}/32"], "oomScoreAdj": 0,
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "minSyncPeriod": "0s", "syncPeriod": "30s"},
        }
        path = self.root / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _ports(self) -> dict[str, int]:
        path = self.root / "ports.json"
        if path.exists():
            return dict(json.loads(path.read_text()))
        from localcluster.cluster import free_port

        ports = {k: free_port() for k in ("kubelet", "kubelet_healthz", "proxy_healthz", "proxy_metrics")}
        path.write_text(json.dumps(ports))
        return ports

    def _route_services(self) -> None:
        """Service IPs are reached through kube-proxy's DNAT; the route keeps them on this machine."""
        # via lo from the node IP: DNAT sends matched packets on to a pod; unmatched ones die on lo
        subprocess.run(["ip", "route", "replace", SERVICE_CIDR, "dev", "lo", "src", NODE_IP], check=True,
                       capture_output=True)

    # ---- stop ----------------------------------------------------------------------------------
    def remove_workloads(self) -> None:
        """Kills and removes every container and sandbox while containerd still runs."""
        if not CONTAINERD_SOCK.exists():
            return
        ctr = [*ctr_command(), "-n", "k8s.io"]
        for task in _first_column(subprocess.run([*ctr, "tasks", "ls"], capture_output=True, text=True,
                                                 timeout=30, check=False).stdout):
            subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True, timeout=30,
                           check=False)
        time.sleep(0.5)
        for task in _first_column(subprocess.run([*ctr, "tasks", "ls"], capture_output=True, text=True,
                                                 timeout=30, check=False).stdout):
            subprocess.run([*ctr, "tasks", "delete", "-f", task], capture_output=True, timeout=30, check=False)
        containers = _first_column(subprocess.run([*ctr, "containers", "ls"], capture_output=True, text=True,
                                                  timeout=30, check=False).stdout)
        if containers:
            subprocess.run([*ctr, "containers", "rm", *containers], capture_output=True, timeout=60, check=False)

    def clean(self) -> None:
        """After the processes stopped: shims, leftover container processes, mounts and host state."""
        for pid in _shim_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        hoststate.kill_cgroup_processes()
        hoststate.unmount_under(KUBELET_ROOT, RUN, CONTAINERD_ROOT)
        subprocess.run(["ip", "route", "del", SERVICE_CIDR, "dev", "lo"], check=False, capture_output=True)
        hoststate.restore()
        shutil.rmtree(KUBELET_ROOT.parent, ignore_errors=True)
        shutil.rmtree(RUN, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _first_column(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:] if line.strip()]


def _shim_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(CONTAINERD_SOCK).encode() in cmd:
                pids.append(int(proc.name))
    return pids


CONTAINERD_CONFIG = """\
version = 2
root = "%(root)s"
state = "%(state)s"
[grpc]
  address = "%(sock)s"
[ttrpc]
  address = "%(sock)s.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%(pause)s"
  enable_selinux = false
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE: without this runc fails ("can't get final child's PID from pipe")
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%(cni_conf)s"
"""
