"""The command blocks README.md and docs/ give, run as a user types them on the local cluster.

Each block marked `<!-- tested: tests/e2e/test_docs_sequences.py::NAME -->` runs verbatim in one
`bash -euo pipefail` from the repository root, in a session of its own: what it starts in the
background (`make run &`, `make model-store &`) stays up until the test stops the whole session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.kwok import NODE_COUNT
from localcluster.realnode import NAME as REAL_NODE
from tests.docs_blocks import REPO, block

pytestmark = pytest.mark.cluster
SEQUENCES = ("using-the-operator", "local-cluster-nodes")  # every marked block; tests/unit/test_docs.py checks
SERVING = "app.kubernetes.io/managed-by=onnx-operator"
PULL_REASONS = {"Pulling", "ErrImagePull", "ErrImageNeverPull"}
RunBlock = Callable[[str, float], tuple[int, str]]


def stop_session(pid: int, timeout: float = 30) -> None:
    """SIGTERM to the block's whole session (bash and what it left in the background), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture()
def typed(cluster: ClusterHandle, tmp_path: Path) -> Iterator[RunBlock]:
    """Runs a docs block as typed; returns (exit code, output). Sessions are stopped at teardown."""
    if cluster.extra.get("paths") is None or cluster.kubeconfig != REPO / ".cluster" / "kubeconfig":
        pytest.skip("the docs' blocks use this checkout's local cluster (.cluster/)")
    sessions: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "V", "MAKEFLAGS", "MAKELEVEL")}

    def run(text: str, timeout: float) -> tuple[int, str]:
        log = tmp_path / f"block-{len(sessions)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", text], cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        sessions.append(proc)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -1
        return code, log.read_text(errors="replace")

    yield run
    for proc in reversed(sessions):
        stop_session(proc.pid)
        proc.wait(timeout=10)


def delete_examples(cluster: ClusterHandle) -> None:
    """Removes examples/basic/ from the default namespace and waits until its serving pods are gone."""
    cluster.kubectl("delete", "-f", str(REPO / "examples/basic"), "--ignore-not-found", "--wait=true",
                    "--timeout=60s", check=False)
    wait_for("the example's pods to go", lambda: not cluster.kubectl_json(
        "get", "pods", "-n", "default", "-l", SERVING, "-o", "json")["items"], timeout=120, interval=1)


def inference_answers(output: str) -> list[dict[str, object]]:
    """The JSON answers of `/v2/models/iris/infer` in a block's output (operator logs interleave)."""
    decoder, answers, start = json.JSONDecoder(), [], output.find('{"model_name"')
    while start >= 0:
        answer, end = decoder.raw_decode(output, start)
        answers.append(answer)
        start = output.find('{"model_name"', end)
    return answers


@pytest.fixture()
def clean_default_namespace(cluster: ClusterHandle) -> Iterator[None]:
    delete_examples(cluster)  # a run that died before its teardown must not decide this one
    yield
    delete_examples(cluster)  # while the block's operator still runs; the session stops after


def test_using_the_operator_runs_as_written(typed: RunBlock, clean_default_namespace: None,
                                            cluster: ClusterHandle) -> None:
    runtime_image = cluster.extra["images"]["runtime"]

    code, output = typed(block("using-the-operator").text, 600)

    assert code == 0, output[-4000:]
    assert f"runtime image {runtime_image} (the one the local cluster imported" in output, output[-4000:]
    answers = inference_answers(output)
    assert answers and answers[-1]["model_version"] == "1.0.0" and answers[-1]["outputs"], output[-4000:]
    md = cluster.kubectl_json("get", "md", "iris", "-n", "default", "-o", "json")
    assert md["status"]["phase"] == "Ready" and md["status"]["servingVersion"] == "iris-1-0-0", md["status"]
    pods = cluster.kubectl_json("get", "pods", "-n", "default", "-l", SERVING, "-o", "json")["items"]
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {runtime_image}
    events = cluster.kubectl_json("get", "events", "-n", "default", "-o", "json")["items"]
    pulls = [e for e in events if e["involvedObject"]["name"].startswith("iris")
             and (e["reason"] in PULL_REASONS or "pulling image" in e.get("message", "").lower())]
    assert not pulls, [(e["reason"], e["message"]) for e in pulls]


def test_local_cluster_block_shows_the_real_node_and_the_kwok_nodes(typed: RunBlock) -> None:
    code, output = typed(block("local-cluster-nodes").text, 600)

    assert code == 0, output[-4000:]
    phases = [line for line in output.splitlines() if line.startswith("==> ")]
    # one line per set-up phase (venv only when pyproject.toml changed), each naming its log
    assert [line.split()[1] for line in phases if line.split()[1] != "venv"] == [
        "deps", "cluster-bin", "node-images", "cluster"], phases
    assert all(" ok in " in line and ".cluster/logs/" in line for line in phases), phases
    nodes = {line.split()[0]: line.split()[1] for line in output.splitlines()
             if line.startswith((REAL_NODE, "kwok-node-"))}
    assert nodes == {REAL_NODE: "Ready", **{f"kwok-node-{i}": "Ready" for i in range(NODE_COUNT)}}, output
