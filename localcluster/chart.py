"""Installs the operator's Helm chart on the local cluster, with the images `make cluster` built."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "onnx-operator"


def image_values(images: dict[str, str]) -> dict[str, str]:
    """The chart values that point it at the images the real node has."""
    repository, _, tag = images["operator"].rpartition(":")
    return {"image.repository": repository, "image.tag": tag, "runtimeImage": images["runtime"]}


def helm_install_operator(helm: Path, kubeconfig: Path, images: dict[str, str], namespace: str = "onnx-operator",
                          release: str = "onnx-operator", values: dict[str, str] | None = None,
                          timeout: str = "180s") -> str:
    """`helm upgrade --install` of the chart, waiting until the operator pod is Ready; returns helm's output."""
    sets = {**image_values(images), **(values or {})}
    args = [str(helm), "upgrade", "--install", release, str(CHART), "-n", namespace, "--create-namespace",
            f"--kubeconfig={kubeconfig}", "--wait", f"--timeout={timeout}"]
    for key, value in sets.items():
        args += ["--set-string" if key != "replicas" else "--set", f"{key}={value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"helm install failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def helm_uninstall(helm: Path, kubeconfig: Path, namespace: str = "onnx-operator",
                   release: str = "onnx-operator") -> None:
    subprocess.run([str(helm), "uninstall", release, "-n", namespace, f"--kubeconfig={kubeconfig}", "--wait",
                    "--timeout=120s"], capture_output=True, check=False)
