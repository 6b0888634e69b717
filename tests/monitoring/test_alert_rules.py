"""The alert rules: valid for promtool, each alert firing and staying quiet in promtool's unit tests, and the
chart's PrometheusRule carrying exactly the plain rules file's group, with thresholds from values."""

from __future__ import annotations

import subprocess

import yaml

from monitoring.__main__ import main as generate
from tests.monitoring.conftest import REPO, render, tool

RULES = REPO / "monitoring/onnx-operator.rules.yaml"
RULE_TESTS = REPO / "monitoring/onnx-operator.rules.test.yaml"


def test_generated_files_are_up_to_date() -> None:
    assert generate(["--check"]) == 0, "run `make monitoring`"


def test_promtool_accepts_the_rules_file() -> None:
    out = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)

    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run([tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)

    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    checks = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]

    firing = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert firing == alerts and quiet == alerts


def test_chart_prometheusrule_has_the_plain_files_rules(helm: str) -> None:
    [rule] = render(helm, {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}},
                    show="templates/prometheusrule.yaml")

    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_chart_thresholds_come_from_values(helm: str) -> None:
    [rule] = render(helm, {"prometheusRule": {"enabled": True}, "alerts": {"errorRatio": 0.2, "degradedFor": "15m"}},
                    show="templates/prometheusrule.yaml")

    by_name = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert by_name["ModelErrorRatioHigh"]["expr"].endswith("> 0.2")
    assert by_name["ModelDeploymentDegraded"]["for"] == "15m"
    assert "{{ $labels.modeldeployment }}" in by_name["ModelDeploymentDegraded"]["annotations"]["summary"]


def test_chart_renders_no_prometheusrule_unless_asked(helm: str) -> None:
    out = subprocess.run([helm, "template", "obs", str(REPO / "charts/onnx-operator"), "--kube-version", "1.36.0",
                          "--show-only", "templates/prometheusrule.yaml"], capture_output=True, text=True)

    assert out.returncode != 0 and "could not find template" in out.stderr
