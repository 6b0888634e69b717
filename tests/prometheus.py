"""A real Prometheus for tests, and the scrape configs it runs with.

`kubernetes_sd_scrape_config()` is the config docs/rollouts.md documents for a user's plain Prometheus:
pod-role discovery filtered on the labels of serving pods, then the `prometheus.io/*` annotations
the operator puts on them. Point it only at pods that really run on a node: the IPs of simulated
(kwok) pods are made-up private addresses no traffic may go to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from localcluster.harness import terminate, wait_for
from tests.runtime.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
# the labels every serving pod carries (onnx_operator.desired.names.version_labels)
SERVING_POD_SELECTOR = "app.kubernetes.io/managed-by=onnx-operator,app.kubernetes.io/component=serving"


def build_prometheus_with_kubernetes_sd(dest: Path) -> Path:
    """prometheus and promtool with Kubernetes discovery in `dest` (built once, then cached)."""
    subprocess.run([str(REPO / "localcluster/tools/build-prometheus.sh"), str(dest)], check=True, timeout=2400)
    return dest


def static_scrape_config(targets: list[str], job: str = "onnx-server", honor_labels: bool = False) -> dict[str, Any]:
    """Scrapes fixed host:port targets (runtime servers started by a test on loopback). `honor_labels` keeps
    the targets' own `namespace` labels (the operator's per-ModelDeployment series), as the chart's
    ServiceMonitor does."""
    config: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": list(targets)}]}
    if honor_labels:
        config["honor_labels"] = True
    return config


def kubernetes_sd_scrape_config(kubeconfig: Path | None = None, namespaces: list[str] | None = None,
                                job: str = "onnx-serving") -> dict[str, Any]:
    """Discovers serving pods through the Kubernetes API (pod role, filtered on our labels) and
    scrapes the port and path their `prometheus.io/*` annotations name. Inside a cluster leave
    `kubeconfig` out (the in-cluster service account is used)."""
    sd: dict[str, Any] = {"role": "pod", "selectors": [{"role": "pod", "label": SERVING_POD_SELECTOR}]}
    if kubeconfig is not None:
        sd["kubeconfig_file"] = str(kubeconfig)
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    return {"job_name": job, "kubernetes_sd_configs": [sd], "relabel_configs": [
        {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "regex": "true",
         "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
        # one target per pod: the serving container's named port (the annotation then sets the number)
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "regex": "(.+)",
         "target_label": "__metrics_path__"},
        {"source_labels": ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
         "regex": "(.+);(\\d+)", "replacement": "$1:$2", "target_label": "__address__"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]}


def write_prometheus_config(path: Path, scrape_configs: list[dict[str, Any]], interval: str = "1s",
                            rule_files: tuple[Path, ...] = ()) -> Path:
    """A complete prometheus.yml with the given scrape configs and rule files (short intervals for tests)."""
    config: dict[str, Any] = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                              "scrape_configs": scrape_configs}
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A Prometheus process on 127.0.0.1 with its own TSDB under `root`; `binary` is Debian's by default
    (no Kubernetes discovery) or the one localcluster/tools/build-prometheus.sh builds."""

    def __init__(self, root: Path, scrape_configs: list[dict[str, Any]], binary: str = "prometheus",
                 port: int | None = None, rule_files: tuple[Path, ...] = ()) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = write_prometheus_config(root / "prometheus.yml", scrape_configs, rule_files=rule_files)
        self.log = root / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for("prometheus ready", self._ready, timeout=60)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        resp.raise_for_status()
        result: list[dict[str, Any]] = resp.json()["data"]["result"]
        return result

    def query_range(self, promql: str, start: float, end: float, step: float = 2.0) -> list[dict[str, Any]]:
        """The series a graph over [start, end] shows (unix seconds), as Grafana asks for them."""
        resp = httpx.get(f"{self.url}/api/v1/query_range", params={"query": promql, "start": start, "end": end,
                                                                   "step": step}, timeout=30)
        resp.raise_for_status()
        result: list[dict[str, Any]] = resp.json()["data"]["result"]
        return result

    def stop(self) -> None:
        terminate(self.proc)
