"""The documented kubernetes_sd scrape config, checked by a promtool that knows Kubernetes discovery
(Debian's is built without it; localcluster/tools/build-prometheus.sh builds one, cached)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.prometheus import (
    build_prometheus_with_kubernetes_sd,
    kubernetes_sd_scrape_config,
    static_scrape_config,
    write_prometheus_config,
)


@pytest.fixture(scope="module")
def prometheus_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_prometheus_with_kubernetes_sd(tmp_path_factory.mktemp("prometheus-bin"))


def test_the_kubernetes_sd_scrape_config_is_valid_for_prometheus(prometheus_bin: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    config = write_prometheus_config(tmp_path / "prometheus.yml", [
        kubernetes_sd_scrape_config(kubeconfig, namespaces=["team-a"]), static_scrape_config(["127.0.0.1:1"])])

    checked = subprocess.run([str(prometheus_bin / "promtool"), "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_a_broken_relabel_rule_is_rejected_so_the_check_can_fail(prometheus_bin: Path, tmp_path: Path) -> None:
    broken = kubernetes_sd_scrape_config()
    broken["relabel_configs"][0]["regex"] = "("  # not a valid regular expression
    config = write_prometheus_config(tmp_path / "prometheus.yml", [broken])

    checked = subprocess.run([str(prometheus_bin / "promtool"), "check", "config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)

    assert checked.returncode != 0
