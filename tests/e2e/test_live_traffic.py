"""Every rollout under live traffic on the real node: a prober sends inference requests through the
ModelDeployment's Service ClusterIP (kube-proxy) from before the change until after the result, and
not one request may fail. Each test prints the prober's totals."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_failing_model
from localcluster.prober import DEFAULT_BODY, Prober, Report
from tests.e2e.conftest import ModelStore, OperatorProcess
from tests.e2e.helpers import (
    condition,
    get,
    model_deployment,
    model_version,
    replicas_by_version,
    rollout,
    service_url,
    two_versions,
    wait_mv_phase,
    wait_ready,
    wait_until,
)
from tests.e2e.test_kubectl_model import kubectl_model

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
RATE = 25.0
# share of the new version while a canary step holds: the replica ratio, within this many points
SHARE_TOLERANCE = 0.15


class Traffic:
    """One test's ModelDeployment `web` under a prober: v1 and v2 verified, the probers it started."""

    def __init__(self, cluster: ClusterHandle, namespace: str, capture: pytest.CaptureFixture[str]) -> None:
        self.cluster, self.namespace, self.capture = cluster, namespace, capture
        self.started: list[Prober] = []

    def say(self, line: str) -> None:
        """Past pytest's capture: the prober counts belong in every run's log, passing or not."""
        with self.capture.disabled():
            print(line, flush=True)

    def start_web(self, replicas: int, **spec: Any) -> Prober:
        """`web` serving v1 with `spec`, and a prober sending to its Service once it answers steadily."""
        cluster, ns = self.cluster, self.namespace
        cluster.apply(model_deployment("web", "v1", replicas=replicas, kwok=False, **spec), ns)
        wait_ready(cluster, ns, "web", timeout=240)
        url = service_url(cluster, ns, "web")
        # the zero-failure window opens once the new Service has answered 20 requests in a row: a request
        # in the first second of a brand-new Service's life was once seen to time out (see docs/rollouts.md)
        wait_for("the Service answering 20 in a row", lambda: all(
            httpx.post(f"{url}/v2/models/linear/infer", json=DEFAULT_BODY, timeout=2).status_code == 200
            for _ in range(20)), timeout=60, interval=0.5)
        prober = Prober(url, "linear", rate=RATE, max_seconds=600, timeout=5.0)
        self.started.append(prober)
        prober.start()
        wait_for("the prober's first answers", lambda: prober.report().total >= 10, timeout=30)
        return prober

    def finish(self, prober: Prober, name: str) -> Report:
        time.sleep(2)  # a little traffic after the result too
        report = prober.stop()
        self.say(f"\n[prober: {name}] {report.summary()}; answered by {dict(report.versions)}")
        return report


@pytest.fixture()
def traffic(cluster: ClusterHandle, namespace: str, models: ModelStore,
            capsys: pytest.CaptureFixture[str]) -> Iterator[Traffic]:
    """v1 and v2 verified; every prober the test starts is stopped when it ends, passed or failed."""
    two_versions(cluster, namespace, models, f"live-{namespace}")
    live = Traffic(cluster, namespace, capsys)
    yield live
    for prober in live.started:
        prober.stop()


@pytest.mark.parametrize("max_unavailable", [0, 1])
def test_rolling_update_drops_no_request(cluster: ClusterHandle, namespace: str, traffic: Traffic,
                                         max_unavailable: int) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": max_unavailable}}
    prober = traffic.start_web(3, strategy=strategy)

    cluster.apply(model_deployment("web", "v2", replicas=3, kwok=False, strategy=strategy), namespace)
    md = wait_until(cluster, "md", namespace, "web", "v2 serving everything", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=300)
    wait_for("v1 gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v2": 3}, timeout=120)

    report = traffic.finish(prober, f"rolling maxUnavailable={max_unavailable}")
    assert report.failed == 0, report.describe_failures()
    assert report.versions["1.0.0"] > 0 and report.versions["2.0.0"] > 0
    assert md["status"]["history"][-1]["result"] == "Succeeded"


def test_canary_split_follows_the_replicas_and_drops_no_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    canary = {"type": "Canary", "canary": {"steps": [{"weight": 25}, {"weight": 50, "pause": "5s"},
                                                     {"weight": 100}]}}
    prober = traffic.start_web(4, strategy=canary)

    cluster.apply(model_deployment("web", "v2", replicas=4, kwok=False, strategy=canary), namespace)
    wait_until(cluster, "md", namespace, "web", "step 1 holding for promotion", lambda o: o["status"].get(
        "phase") == "Paused" and replicas_by_version(cluster, namespace, "web") == {"v1": 3, "v2": 1}, timeout=240)
    wait_for("both versions' pods Ready", lambda: get(cluster, "md", namespace, "web")["status"].get(
        "readyReplicas") == 4, timeout=60)
    time.sleep(1.5)  # endpoints settle
    since = prober.elapsed()
    time.sleep(12)
    share = prober.report().share("2.0.0", since=since, until=prober.elapsed() - 1)
    held = prober.report().total

    out = kubectl_model(cluster, "promote", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    md = wait_until(cluster, "md", namespace, "web", "v2 serving everything", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=300)

    report = traffic.finish(prober, "canary 25 -> 50 -> 100")
    traffic.say(f"[prober: canary] share of 2.0.0 while holding 25%: {share:.2f} ({held} requests sent by then)")
    assert report.failed == 0, report.describe_failures()
    assert abs(share - 0.25) <= SHARE_TOLERANCE, f"share {share:.2f} outside 0.25 +- {SHARE_TOLERANCE}"
    assert md["status"]["history"][-1]["result"] == "Succeeded"


def test_blue_green_preview_switch_and_rollback_drop_no_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    bg = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 120}}
    prober = traffic.start_web(2, strategy=bg)

    cluster.apply(model_deployment("web", "v2", replicas=2, kwok=False, strategy=bg), namespace)
    wait_until(cluster, "md", namespace, "web", "the preview awaiting promotion",
               lambda o: o["status"].get("phase") == "Paused", timeout=240)
    with Prober(service_url(cluster, namespace, "web-preview"), "linear", rate=RATE, max_requests=50) as preview:
        preview_report = preview.wait(timeout=30)
    assert preview_report.failed == 0 and set(preview_report.versions) == {"2.0.0"}, preview_report.summary()
    assert prober.report().versions.get("2.0.0", 0) == 0, "the main Service served the preview before promotion"

    out = kubectl_model(cluster, "promote", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    wait_for("the switch", lambda: get(cluster, "service", namespace, "web")["spec"]["selector"].get(
        "serving.onnx-operator.io/version") == "v2")
    switched = prober.elapsed()
    time.sleep(4)
    assert replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2}, "v1 stays warm"

    out = kubectl_model(cluster, "rollback", "web", "--to", "v1", "-n", namespace)
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    wait_for("traffic back on v1", lambda: get(cluster, "service", namespace, "web")["spec"]["selector"].get(
        "serving.onnx-operator.io/version") == "v1", timeout=30)
    back_in = time.monotonic() - t0
    back = prober.elapsed() + 1.5

    report = traffic.finish(prober, "blue/green")
    traffic.say(f"[prober: blue/green] selector back on v1 {back_in:.1f}s after the rollback")
    assert report.failed == 0, report.describe_failures()
    assert report.share("2.0.0", since=switched + 1.5, until=switched + 4) == 1.0
    assert report.share("1.0.0", since=back) == 1.0
    assert back_in < 10, "a rollback inside scaleDownDelaySeconds is a selector switch, not a new rollout"


def test_version_whose_pods_never_become_ready_is_rolled_back_without_a_failed_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic, models: ModelStore) -> None:
    cluster.apply(model_version("broken", models.publish(f"live-broken-{namespace}.onnx", make_failing_model()),
                                version="9.0.0"), namespace)
    wait_mv_phase(cluster, namespace, "broken", "Ready")
    canary = {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "5s"}, {"weight": 100}]}}
    prober = traffic.start_web(2, strategy=canary)

    cluster.apply(model_deployment("web", "broken", replicas=2, kwok=False, strategy=canary,
                                   progressDeadlineSeconds=20), namespace)
    md = wait_until(cluster, "md", namespace, "web", "rolled back", lambda o: condition(
        o, "RolledBack").get("status") == "True", timeout=180)
    wait_for("the broken pods gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2}, timeout=60)

    report = traffic.finish(prober, "progress deadline rollback")
    assert condition(md, "RolledBack")["reason"] == "ProgressDeadlineExceeded"
    assert report.failed == 0, report.describe_failures()
    assert set(report.versions) == {"1.0.0"}


def test_abort_returns_to_stable_without_a_failed_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    canary = {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 100}]}}
    prober = traffic.start_web(2, strategy=canary)
    cluster.apply(model_deployment("web", "v2", replicas=2, kwok=False, strategy=canary), namespace)
    wait_until(cluster, "md", namespace, "web", "the 50% step holding", lambda o: o["status"].get(
        "phase") == "Paused", timeout=240)

    out = kubectl_model(cluster, "abort", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    wait_until(cluster, "md", namespace, "web", "rolled back", lambda o: condition(
        o, "RolledBack").get("status") == "True", timeout=120)
    wait_for("v2 gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2}, timeout=120)

    report = traffic.finish(prober, "abort")
    assert report.failed == 0, report.describe_failures()
    assert report.versions["2.0.0"] > 0, "the canary served before the abort"


def test_canary_completes_through_operator_kills_without_a_failed_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic, operator: OperatorProcess) -> None:
    steps = {"type": "Canary", "canary": {"steps": [{"weight": 34, "pause": "3s"}, {"weight": 67, "pause": "3s"},
                                                    {"weight": 100}]}}
    prober = traffic.start_web(3, strategy=steps)
    cluster.apply(model_deployment("web", "v2", replicas=3, kwok=False, strategy=steps), namespace)
    rng = random.Random(11)

    for _ in range(4):
        time.sleep(rng.uniform(1.0, 5.0))
        operator.restart(signal.SIGKILL)
    md = wait_until(cluster, "md", namespace, "web", "v2 serving everything", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=300)

    report = traffic.finish(prober, "canary with operator kills")
    assert report.failed == 0, report.describe_failures()
    assert md["status"]["history"][-1]["result"] == "Succeeded"
    assert "version" not in rollout(cluster, namespace, "web")
