"""The host changes a real node makes, recorded before they are made and undone on `down`.

A kubelet, kube-proxy, containerd and the CNI bridge change machine-wide state: sysctls, iptables
chains, a bridge, an address on `lo`, cgroups, mounts and a few fixed paths. The record lives in
/run (gone on reboot, when the changes are gone too), so a later `down`, even from another
checkout or after a crash, restores what the first `up` found.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

RUN_DIR = Path("/run/onnx-operator-node")
RECORD = RUN_DIR / "host-state.json"
NODE_IP = "198.18.0.254"
BRIDGE = "onnxbr0"
CGROUP_ROOT = "onnx-operator-node"
CGROUP_FS = Path("/sys/fs/cgroup")
# set by kubelet (protectKernelDefaults: false) and the bridge plugin
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
# paths the components use whatever their flags say
FIXED_PATHS = (Path("/var/lib/kubelet"), Path("/run/containerd"), Path("/run/netns"), Path("/var/lib/cni"))
# what the node puts inside them, removed when the folder itself was there before
FIXED_CHILDREN = (Path("/var/lib/kubelet/device-plugins/kubelet.sock"), Path("/run/containerd/s"),
                  Path("/run/containerd/runc"), Path("/var/lib/cni/results"), Path("/var/lib/cni/networks/onnx-node"))
CHAIN_PREFIXES = ("KUBE-", "CNI-")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def record() -> None:
    """Writes what the host looks like now, unless a record from an earlier start is still there."""
    if RECORD.exists():
        return
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    state = {
        "sysctls": {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()},
        "existing_paths": [str(p) for p in FIXED_PATHS if p.exists()],
        "lo_address": NODE_IP in _run("ip", "-4", "addr", "show", "dev", "lo").stdout,
    }
    tmp = RECORD.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(RECORD)


def recorded() -> bool:
    return RECORD.exists()


def add_node_address() -> None:
    """The node's IP on lo: kubelet refuses a loopback node IP, and pods reach the host on it."""
    if NODE_IP not in _run("ip", "-4", "addr", "show", "dev", "lo").stdout:
        subprocess.run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"], check=True)


def make_cgroups() -> list[Path]:
    """The kubelet's cgroupRoot in every cgroup v1 hierarchy (cpuset copied from the parent)."""
    made = []
    for hierarchy in sorted(CGROUP_FS.iterdir()):
        if not hierarchy.is_dir() or hierarchy.name == "unified" or hierarchy.is_symlink():
            continue
        path = hierarchy / CGROUP_ROOT
        path.mkdir(exist_ok=True)
        if hierarchy.name.startswith("cpuset"):
            for f in ("cpuset.cpus", "cpuset.mems"):
                target = path / f
                if not target.read_text().strip():
                    target.write_text((hierarchy / f).read_text())
        made.append(path)
    return made


def kill_cgroup_processes() -> int:
    """SIGKILLs every process left in the node's cgroups (containers whose shim is gone)."""
    killed = 0
    for hierarchy in ("pids", "memory", "cpu,cpuacct", "cpu"):
        root = CGROUP_FS / hierarchy / CGROUP_ROOT
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                        killed += 1
        break
    return killed


def remove_cgroups() -> None:
    for hierarchy in CGROUP_FS.iterdir():
        root = hierarchy / CGROUP_ROOT
        if not root.is_dir():
            continue
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def unmount_under(*roots: Path) -> int:
    """Unmounts every mount point under the given folders, deepest first; returns how many."""
    prefixes = [str(r.resolve()).rstrip("/") + "/" for r in roots if r.exists()]
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point.startswith(p) or point + "/" == p for p in prefixes):
            points.append(point)
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)
    return len(points)


def without_our_chains(saved: str) -> str:
    """An `iptables-save` dump minus the KUBE-* and CNI-* chains and every rule in or jumping to them."""
    ours = {line[1:].split()[0] for line in saved.splitlines()
            if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)}
    kept = []
    for line in saved.splitlines():
        if line.startswith(":") and line[1:].split()[0] in ours:
            continue
        if line.startswith("-A "):
            parts = shlex.split(line)  # comments are quoted: "kubernetes service portals"
            target = next((parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("-j", "-g")), None)
            if parts[1] in ours or target in ours:
                continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def delete_chains() -> None:
    """Removes the KUBE-* and CNI-* iptables chains (both IP families) and the rules that jump to them: one
    save and one restore per table (kube-proxy leaves thousands of chains after a large run, and one
    iptables call per chain re-reads the whole table each time: minutes)."""
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(f"{tool}-save") or not shutil.which(f"{tool}-restore"):
            continue
        for table in ("filter", "nat", "mangle", "raw"):
            saved = _run(f"{tool}-save", "-t", table).stdout
            if not any(line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES) for line in saved.splitlines()):
                continue
            subprocess.run([f"{tool}-restore", "-w", "-T", table], input=without_our_chains(saved), text=True,
                           capture_output=True, check=False)


def remove_netns() -> None:
    netns = Path("/run/netns")
    if not netns.is_dir():
        return
    for ns in netns.iterdir():
        if re.match(r"^cni-[0-9a-f-]+$", ns.name):
            _run("umount", str(ns))
            with contextlib.suppress(OSError):
                ns.unlink()


def restore() -> None:
    """Undoes everything `record` saw before the node started; a no-op without a record."""
    if not RECORD.exists():
        return
    state = json.loads(RECORD.read_text())
    delete_chains()
    remove_netns()
    _run("ip", "link", "del", BRIDGE)
    remove_cgroups()
    for name, value in state.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value)
    if not state.get("lo_address"):
        _run("ip", "addr", "del", f"{NODE_IP}/32", "dev", "lo")
    existing = set(state.get("existing_paths", []))
    for path in FIXED_PATHS:
        if str(path) not in existing and path.exists():
            unmount_under(path)
            shutil.rmtree(path, ignore_errors=True)
    for child in FIXED_CHILDREN:
        if child.is_dir() and not child.is_symlink():
            unmount_under(child)
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (CGROUP_FS / "unified" / CGROUP_ROOT).rmdir()
    RECORD.unlink(missing_ok=True)
