"""kwok: simulated nodes for scale and failure injection, beside the real node.

kwok manages only nodes labelled `type=kwok`; they carry the taint `TAINT`, so only pods that
tolerate it (ModelDeployment `spec.tolerations` + `spec.nodeSelector`) land there. Their pods get
addresses from 198.18.0.128/26, which nothing routes: no traffic is ever sent to them.

Pod stages given to kwok replace its defaults, so every lifecycle stage is listed here:
- the stock node and pod stages, with short delays so tests run fast;
- no `pod-complete`: Jobs run on the real node (a kwok pod of a Job would never finish);
- failure injection, selected by the pod annotation `kwok.onnx-operator.io/fail`:
  `not-ready` keeps the pod Running with Ready=False forever;
  `crash` keeps it Running, never Ready, its container waiting in CrashLoopBackOff with a
  terminated last state (exit code 1) and a restart count, as a crash-looping container shows.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

FAIL_ANNOTATION = "kwok.onnx-operator.io/fail"
NODE_COUNT = 3
# room for the operator bench's largest run (1,000 ModelDeployments x 3 replicas plus the smaller ones);
# kubelet's default of 110 would leave most of them Pending
PODS_PER_NODE = 1500
NODE_LABEL = {"type": "kwok"}
TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
POD_CIDR = "198.18.0.128/26"
NODE_IP = "198.18.0.253"
# what a ModelDeployment sets to run its pods on kwok nodes
PLACEMENT = {"nodeSelector": NODE_LABEL, "tolerations": [{**TAINT, "operator": "Equal"}]}
FAIL_KEY = f'.metadata.annotations["{FAIL_ANNOTATION}"]'

STOCK = {
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/general/pod-create.yaml",
    "pod/general/pod-init-container-running.yaml",
    "pod/general/pod-init-container-completed.yaml",
    "pod/general/pod-ready.yaml",
    "pod/general/pod-delete.yaml",
}

_FAILED_POD_STATUS = """\
{{ $now := Now }}
conditions:
- lastProbeTime: null
  lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastProbeTime: null
  lastTransitionTime: {{ $now | Quote }}
  reason: ContainersNotReady
  message: 'injected failure: %(mode)s'
  status: "False"
  type: Ready
- lastProbeTime: null
  lastTransitionTime: {{ $now | Quote }}
  reason: ContainersNotReady
  message: 'injected failure: %(mode)s'
  status: "False"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: %(started)s
  restartCount: %(restarts)s
%(state)s
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

_NOT_READY_STATE = """\
  state:
    running:
      startedAt: {{ $now | Quote }}"""

_CRASH_STATE = """\
  state:
    waiting:
      reason: CrashLoopBackOff
      message: back-off restarting failed container
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}"""


def _fast(stage: dict[str, Any]) -> dict[str, Any]:
    delay = stage["spec"].get("delay")
    if delay and stage["metadata"]["name"] != "node-heartbeat-with-lease":
        delay["durationMilliseconds"] = 100
        delay["jitterDurationMilliseconds"] = 400
    return stage


def _failure_stage(ready_stage: dict[str, Any], mode: str) -> dict[str, Any]:
    stage = copy.deepcopy(ready_stage)
    stage["metadata"]["name"] = f"pod-injected-{mode}"
    exprs = stage["spec"]["selector"]["matchExpressions"]
    exprs.append({"key": FAIL_KEY, "operator": "In", "values": [mode]})
    crash = mode == "crash"
    stage["spec"]["next"] = {
        "event": {
            "type": "Warning",
            "reason": "BackOff" if crash else "Unhealthy",
            "message": f"injected failure ({FAIL_ANNOTATION}={mode})",
        },
        "statusTemplate": _FAILED_POD_STATUS
        % {
            "mode": mode,
            "started": "false" if crash else "true",
            "restarts": "5" if crash else "0",
            "state": _CRASH_STATE if crash else _NOT_READY_STATE,
        },
    }
    for key in ("weightFrom", "delay"):
        stage["spec"].pop(key, None)
    stage["spec"]["delay"] = {"durationMilliseconds": 100, "jitterDurationMilliseconds": 300}
    return stage


def build_stages(kwok_module_dir: Path) -> list[dict[str, Any]]:
    root = kwok_module_dir / "kustomize" / "stage"
    stages = [_fast(yaml.safe_load((root / rel).read_text())) for rel in sorted(STOCK)]
    ready = next(s for s in stages if s["metadata"]["name"] == "pod-ready")
    failures = [_failure_stage(ready, mode) for mode in ("not-ready", "crash")]
    ready["spec"]["selector"]["matchExpressions"].append({"key": FAIL_KEY, "operator": "DoesNotExist"})
    return stages + failures


def write_config(kwok_module_dir: Path, path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(build_stages(kwok_module_dir), sort_keys=False))
    return path


def args(kubeconfig: Path, stages: Path, port: int) -> list[str]:
    return [f"--kubeconfig={kubeconfig}", "--manage-nodes-with-label-selector=type=kwok",
            f"--config={stages}", f"--server-address=127.0.0.1:{port}",
            "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}", f"--node-ip={NODE_IP}"]


def node_manifests() -> list[str]:
    return [NODE_TEMPLATE % {"name": f"kwok-node-{i}", "pods": PODS_PER_NODE, **TAINT} for i in range(NODE_COUNT)]


NODE_TEMPLATE = """\
apiVersion: v1
kind: Node
metadata:
  name: %(name)s
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: %(name)s
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec:
  taints:
  - {key: %(key)s, value: %(value)s, effect: %(effect)s}
status:
  allocatable: {cpu: "512", memory: 4Ti, pods: "%(pods)d"}
  capacity: {cpu: "512", memory: 4Ti, pods: "%(pods)d"}
"""
