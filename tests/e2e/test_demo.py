"""`make demo` end to end (DEMO_FAST=1), on the same local cluster and its real node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster.harness import ClusterHandle

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end(cluster: ClusterHandle) -> None:
    env = dict(os.environ, DEMO_FAST="1")
    try:
        out = subprocess.run([sys.executable, "-m", "localcluster.demo"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=900, check=False)
    finally:
        subprocess.run([sys.executable, "-m", "localcluster.demo", "--stop"], cwd=REPO, capture_output=True,
                       check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "real-node" in text and "phase: Ready" in text
    assert '"model_version": "1.0.0"' in text and "HTTP 200" in text
    assert "rollout iris-1-0-0 -> iris-2-0-0: step 2/3" in text
    assert "rolled back: ProgressDeadlineExceeded" in text
    totals = next(line for line in text.splitlines() if line.startswith("prober totals:"))
    assert " 0 failed" in totals and "2.0.0:" in totals and "1.0.0:" in totals, totals
    assert "make demo-down" in text
