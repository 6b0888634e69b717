"""The chart's dashboard and alert rules checked with real tools: promtool, helm, a Prometheus on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".cluster" / "bin"
CHART = REPO / "charts/onnx-operator"


def tool(name: str) -> str:
    """`make tools` puts it in .cluster/bin; Debian's prometheus package has promtool and prometheus too."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    assert found, f"{name} not found: run `make tools` (or `make deps` for Debian's prometheus package)"
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    subprocess.run([str(REPO / "localcluster/tools/build-tools.sh"), str(BIN)], check=True, timeout=1800)
    return str(BIN / "helm")


def render(helm: str, values: dict[str, Any], show: str) -> list[dict[str, Any]]:
    """The chart's objects in one template, rendered with `values` (a values file: numbers stay numbers)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(values, file)
        file.flush()
        out = subprocess.run([helm, "template", "obs", str(CHART), "-n", "monitoring", "--kube-version", "1.36.0",
                              "--show-only", show, "-f", file.name], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]
