"""The docs' tested blocks, the README's example and the set-up phase runner."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml
from onnx_operator.api.parse import parse_model_deployment, parse_model_version

from localcluster.cluster import SETUP_PHASES
from tests.docs_blocks import REPO, block, marked_blocks, marker_count
from tests.e2e.test_docs_sequences import SEQUENCES

PHASE = REPO / "localcluster" / "phase.sh"


def test_every_marked_block_is_one_the_docs_test_runs() -> None:
    blocks = marked_blocks()

    assert marker_count() == len(blocks), "a `tested:` marker is not directly above a fenced block"
    assert {b.name for b in blocks} == set(SEQUENCES)
    assert all(b.language == "sh" for b in blocks)
    for name in SEQUENCES:
        block(name)  # README and docs show the same text


def test_using_the_operator_block_is_in_the_readme_and_getting_started() -> None:
    pages = {b.page.name for b in marked_blocks() if b.name == "using-the-operator"}

    assert pages == {"README.md", "getting-started.md"}


def test_readme_example_is_valid_against_the_api_models() -> None:
    text = (REPO / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert example
    docs = list(yaml.safe_load_all(example.group(1)))

    assert [d["kind"] for d in docs] == ["ModelVersion", "ModelDeployment"]
    parse_model_version(docs[0])
    parse_model_deployment(docs[1])


def test_readme_is_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 160


def test_every_makefile_phase_keeps_its_log_across_cluster_down() -> None:
    names = set(re.findall(r"\$\(PHASE\) ([\w-]+) ", (REPO / "Makefile").read_text()))

    assert names and names <= SETUP_PHASES


def phase(tmp_path: Path, *command: str, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ONNX_OPERATOR_SETUP_LOGS=str(tmp_path / "logs"), ONNX_OPERATOR_CACHE=str(tmp_path),
               V="1" if verbose else "0")
    return subprocess.run([str(PHASE), "demo-phase", "a phase for the test", "--expect", "soon", "--", *command],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)


def test_phase_prints_one_line_and_keeps_the_output_in_its_log(tmp_path: Path) -> None:
    first = phase(tmp_path, "bash", "-c", "for i in $(seq 100); do echo noise $i; done")
    second = phase(tmp_path, "true")

    assert first.returncode == 0 and first.stdout.count("\n") == 1, first.stdout
    assert "(soon)" in first.stdout and " ok in " in first.stdout and "logs/demo-phase.log" in first.stdout
    assert "noise" not in first.stdout
    assert "(last run " in second.stdout
    assert (tmp_path / "logs" / "demo-phase.log").read_text() == ""  # the second run's (empty) output


def test_failed_phase_shows_the_log_tail_and_path(tmp_path: Path) -> None:
    out = phase(tmp_path, "bash", "-c", "for i in $(seq 100); do echo line $i; done; exit 3")

    assert out.returncode == 3
    assert "FAILED" in out.stdout and "line 100" in out.stdout and "line 60" not in out.stdout
    assert str(tmp_path / "logs" / "demo-phase.log") in out.stdout


def test_verbose_phase_prints_the_whole_output(tmp_path: Path) -> None:
    out = phase(tmp_path, "bash", "-c", "for i in $(seq 50); do echo line $i; done", verbose=True)

    assert out.returncode == 0 and "line 1\n" in out.stdout and "line 50" in out.stdout
    assert "line 50" in (tmp_path / "logs" / "demo-phase.log").read_text()
