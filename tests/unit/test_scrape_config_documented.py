"""The docs' plain-Prometheus scrape config (docs/rollouts.md) is the one the tests run with."""

from pathlib import Path

import yaml

from tests.prometheus import SERVING_POD_SELECTOR, kubernetes_sd_scrape_config

ROLLOUTS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "rollouts.md"


def test_documented_scrape_config_is_the_generated_one() -> None:
    text = ROLLOUTS_PAGE.read_text()
    block = text.split("<!-- scrape-config:begin -->")[1].split("<!-- scrape-config:end -->")[0]
    documented = yaml.safe_load(block.strip().removeprefix("```yaml").removesuffix("```"))

    assert documented == {"scrape_configs": [kubernetes_sd_scrape_config()]}


def test_scrape_config_selects_serving_pods_by_the_labels_the_operator_sets() -> None:
    from onnx_operator.desired.names import version_labels

    labels = version_labels("web", "v1")
    wanted = dict(pair.split("=") for pair in SERVING_POD_SELECTOR.split(","))

    assert wanted.items() <= labels.items()


def test_scrape_config_takes_port_and_path_from_the_pod_annotations() -> None:
    config = kubernetes_sd_scrape_config(Path("/k/kubeconfig"), namespaces=["team-a"])

    sd = config["kubernetes_sd_configs"][0]
    relabels = {r.get("target_label"): r for r in config["relabel_configs"]}
    assert sd["role"] == "pod" and sd["kubeconfig_file"] == "/k/kubeconfig" and sd["namespaces"] == {
        "names": ["team-a"]}
    assert relabels["__address__"]["source_labels"][1] == "__meta_kubernetes_pod_annotation_prometheus_io_port"
    assert relabels["__metrics_path__"]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_path"]
