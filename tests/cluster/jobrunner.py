"""The job runner: the local control plane's kubelet for pods owned by Jobs.

kwok simulates pods without containers, so a Job's pod would never do its work. This runner
watches pods owned by a Job that kwok has made Running, executes the pod's init containers and
then its container as local processes (command + args; `env` values; each volume mount path
mapped to a private folder; the termination message path mapped to a file), and writes the result
into the pod status the way a kubelet does: phase Succeeded/Failed, the container's terminated
state with exitCode, reason and the termination message. The Job controller takes it from there.

Executables are looked up on the runner's PATH (the project venv's bin first), so the image's
`onnx-server` command runs from the checkout. Only for local test clusters: it executes the
commands of any Job in the cluster on this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

LOG = logging.getLogger("job-runner")
TIMEOUT_SECONDS = 600
MESSAGE_LIMIT = 4096


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_job_pod(pod: Any) -> bool:
    return any(ref.kind == "Job" for ref in (pod.metadata.owner_references or []))


def rewrite(value: str, mounts: dict[str, Path]) -> str:
    """Maps container paths that fall under a volume mount onto the host folder backing it."""
    for container_path, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if value == container_path or value.startswith(container_path.rstrip("/") + "/"):
            return str(host) + value[len(container_path.rstrip("/")):]
    return value


def run_container(container: Any, workdir: Path, timeout: float) -> dict[str, Any]:
    """Runs one container as a local process; returns its `terminated` state."""
    mounts: dict[str, Path] = {}
    for m in container.volume_mounts or []:
        host = workdir / "volumes" / m.name
        host.mkdir(parents=True, exist_ok=True)
        mounts[m.mount_path] = host
    msg_path = container.termination_message_path or "/dev/termination-log"
    msg_file = workdir / f"{container.name}.termination-log"
    msg_file.unlink(missing_ok=True)
    mounts[msg_path] = msg_file
    argv = [rewrite(a, mounts) for a in (container.command or []) + (container.args or [])]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
    env.update({e.name: rewrite(e.value or "", mounts) for e in container.env or [] if e.value is not None})
    started = _now()
    if not argv or shutil.which(argv[0], path=env["PATH"]) is None:
        return {"exitCode": 127, "reason": "ContainerCannotRun", "startedAt": started, "finishedAt": _now(),
                "message": f"executable {argv[:1]} not found on the job runner's PATH"}
    try:
        proc = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, timeout=timeout, check=False)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, output = 137, b"killed: exceeded the job runner's timeout"
    (workdir / f"{container.name}.log").write_bytes(output)
    message = msg_file.read_text(errors="replace") if msg_file.exists() else ""
    if not message and container.termination_message_policy == "FallbackToLogsOnError" and code:
        message = output.decode(errors="replace")[-MESSAGE_LIMIT:]
    return {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
            "finishedAt": _now(), "message": message[:MESSAGE_LIMIT]}


def container_status(container: Any, terminated: dict[str, Any]) -> dict[str, Any]:
    return {"name": container.name, "image": container.image, "ready": False, "restartCount": 0,
            "started": False, "state": {"terminated": terminated}}


def run_pod(api: client.CoreV1Api, pod: Any, root: Path) -> None:
    name, ns = pod.metadata.name, pod.metadata.namespace
    workdir = Path(tempfile.mkdtemp(prefix=f"{ns}.{name}.", dir=root))
    init_statuses: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    failed = False
    for c in pod.spec.init_containers or []:
        term = run_container(c, workdir, TIMEOUT_SECONDS)
        init_statuses.append(container_status(c, term))
        if term["exitCode"] != 0:
            failed = True
            break
    for c in pod.spec.containers:
        if failed:
            statuses.append({"name": c.name, "image": c.image, "ready": False, "restartCount": 0,
                             "state": {"waiting": {"reason": "PodInitializing"}}})
            continue
        term = run_container(c, workdir, TIMEOUT_SECONDS)
        statuses.append(container_status(c, term))
        failed = failed or term["exitCode"] != 0
    now = _now()
    status: dict[str, Any] = {
        "phase": "Failed" if failed else "Succeeded",
        "containerStatuses": statuses,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    try:
        api.patch_namespaced_pod_status(name, ns, {"status": status})
        LOG.info("Ran pod %s/%s: %s", ns, name, status["phase"])
    except client.ApiException as exc:
        LOG.warning("Could not write status of pod %s/%s: %s", ns, name, exc.reason)


def should_run(pod: Any) -> bool:
    return bool(
        is_job_pod(pod)
        and pod.metadata.deletion_timestamp is None
        and pod.status is not None
        and pod.status.phase == "Running"
        and not any(cs.state and cs.state.terminated for cs in pod.status.container_statuses or [])
    )


def serve(kubeconfig: str, work_dir: Path) -> None:
    config.load_kube_config(kubeconfig)
    api = client.CoreV1Api()
    work_dir.mkdir(parents=True, exist_ok=True)
    started: set[str] = set()
    while True:
        try:
            for event in watch.Watch().stream(api.list_pod_for_all_namespaces, timeout_seconds=60,
                                               _request_timeout=90):
                pod = event["object"]
                if event["type"] in ("ADDED", "MODIFIED") and should_run(pod) and pod.metadata.uid not in started:
                    started.add(pod.metadata.uid)
                    threading.Thread(target=run_pod, args=(api, pod, work_dir), daemon=True).start()
        except Exception as exc:
            LOG.warning("watch restarted: %s", exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.kubeconfig, args.work_dir)


if __name__ == "__main__":
    main()
