"""Every rollout under live traffic on the real node: four kinds of client send inference requests through
the ModelDeployment's Service ClusterIP (kube-proxy) from before the change until after the result: a new
connection per request, a keep-alive httpx pool, `tritonclient.http` and `tritonclient.grpc` (the
Service's grpc port). Not one request of any of them may fail. Each test prints every client's totals."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_failing_model
from localcluster.prober import CLIENTS, ClientMix, MixReport, Prober
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
    wait_service_answers,
    wait_until,
)
from tests.e2e.test_kubectl_model import kubectl_model

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
RATE = 15.0  # requests per second of each of the four clients
AGE = 2  # spec.runtime.maxConnectionAgeSeconds of `web`: keep-alive clients are placed anew this often
GRPC_PORT = 8081  # the Service's grpc port
# seconds after a selector change by which every client's requests reach the new pods: the endpoints
# move (1.5 s), every kept connection outlives its age (+10%) and its next request is the last on it
# (pooled connections are used every ~0.2 s, the others every ~0.07 s: 1 s margin)
MOVED = 1.5 + 1.1 * AGE + 1.0
# share of the new version while a canary step holds: the replica ratio, within this many points
SHARE_TOLERANCE = 0.15


class Traffic:
    """One test's ModelDeployment `web` under the four clients: v1 and v2 verified, the clients it started."""

    def __init__(self, cluster: ClusterHandle, namespace: str, capture: pytest.CaptureFixture[str]) -> None:
        self.cluster, self.namespace, self.capture = cluster, namespace, capture
        self.started: list[ClientMix] = []
        self.age = AGE

    def say(self, line: str) -> None:
        """Past pytest's capture: the prober counts belong in every run's log, passing or not."""
        with self.capture.disabled():
            print(line, flush=True)

    def apply_web(self, version: str, replicas: int, **spec: Any) -> None:
        """`web` serving `version` on the real node, with the test's connection age unless `spec` sets one."""
        spec.setdefault("runtime", {"maxConnectionAgeSeconds": self.age})
        self.cluster.apply(model_deployment("web", version, replicas=replicas, kwok=False, **spec), self.namespace)

    def start_web(self, replicas: int, age: int = AGE, kinds: tuple[str, ...] = CLIENTS, **spec: Any) -> ClientMix:
        """`web` serving v1 with `spec`, and the clients sending to its Service once it answers steadily."""
        cluster, ns = self.cluster, self.namespace
        self.age = age
        self.apply_web("v1", replicas, **spec)
        wait_ready(cluster, ns, "web", timeout=240)
        url = service_url(cluster, ns, "web")
        wait_service_answers(url)  # the zero-failure window opens once kube-proxy serves the new Service
        mix = ClientMix(url, f"{url.removeprefix('http://')}:{GRPC_PORT}", "linear", rate=RATE, max_seconds=600,
                        timeout=5.0, kinds=kinds)
        self.started.append(mix)
        mix.start()
        wait_for("every client's first answers", lambda: all(
            r.total >= 5 for r in mix.report().reports.values()), timeout=30)
        return mix

    def finish(self, mix: ClientMix, name: str) -> MixReport:
        time.sleep(2)  # a little traffic after the result too
        report = mix.stop()
        self.say(f"\n[clients: {name}]")
        for one in report.reports.values():
            self.say(f"  {one.summary()}; answered by {dict(one.versions)}")
        return report


@pytest.fixture()
def traffic(cluster: ClusterHandle, namespace: str, models: ModelStore,
            capsys: pytest.CaptureFixture[str]) -> Iterator[Traffic]:
    """v1 and v2 verified; every client the test starts is stopped when it ends, passed or failed."""
    two_versions(cluster, namespace, models, f"live-{namespace}")
    live = Traffic(cluster, namespace, capsys)
    yield live
    for mix in live.started:
        mix.stop()


@pytest.mark.parametrize("max_unavailable", [0, 1])
def test_rolling_update_drops_no_request(cluster: ClusterHandle, namespace: str, traffic: Traffic,
                                         max_unavailable: int) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": max_unavailable}}
    prober = traffic.start_web(3, strategy=strategy)

    traffic.apply_web("v2", 3, strategy=strategy)
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

    traffic.apply_web("v2", 4, strategy=canary)
    wait_until(cluster, "md", namespace, "web", "step 1 holding for promotion", lambda o: o["status"].get(
        "phase") == "Paused" and replicas_by_version(cluster, namespace, "web") == {"v1": 3, "v2": 1}, timeout=240)
    wait_for("both versions' pods Ready", lambda: get(cluster, "md", namespace, "web")["status"].get(
        "readyReplicas") == 4, timeout=60)
    time.sleep(1.5)  # endpoints settle
    since = prober.elapsed()
    time.sleep(12)
    share = prober.report().share("2.0.0", since=since, until=prober.elapsed() - 1, kinds=("per-request",))
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


HELD_AGE = 1  # seconds: the held-step test's connection age
HELD_WINDOW = 40  # seconds of a held 50% step measured
KEEP_ALIVE = ("pooled", "triton-http", "triton-grpc")


def test_a_held_50_percent_step_is_honest_for_keep_alive_and_grpc_clients(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    """Why this cannot fail by chance (fewer than 1 in 1,000 runs): with a 1 s age (+/-10%), each kept
    connection is placed anew by kube-proxy (uniformly over 2 stable + 2 canary pods) at least 36 times
    in the 40 s window. A one-connection client that never sees both versions: 2 x 0.5^36 < 1e-10. The
    three keep-alive clients send at the same rate; at 15 req/s the httpx pool keeps reusing its first
    idle connection, so count each client as one connection (the worst case). Their combined canary
    share then averages at least 3 x 36 = 108 fair placements: standard deviation sqrt(0.25 / 108) =
    0.048, and a miss of more than 0.2 is 4.2 deviations: p < 3e-5."""
    canary = {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 100}]}}
    mix = traffic.start_web(4, age=HELD_AGE, strategy=canary)

    traffic.apply_web("v2", 4, strategy=canary)
    wait_until(cluster, "md", namespace, "web", "the 50% step held with 2 + 2 pods Ready", lambda o: o["status"].get(
        "phase") == "Paused" and o["status"].get("readyReplicas") == 4
        and replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2}, timeout=240)
    settled = mix.elapsed() + 1.5 + 2 * 1.1 * HELD_AGE  # endpoints settle; every kept connection aged twice
    time.sleep(settled - mix.elapsed() + HELD_WINDOW)
    held = mix.report()
    window = {"since": settled, "until": settled + HELD_WINDOW}

    out = kubectl_model(cluster, "promote", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    wait_until(cluster, "md", namespace, "web", "v2 serving everything", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=300)
    report = traffic.finish(mix, "held 50% canary, four clients")
    shares = {kind: held.share("2.0.0", kinds=(kind,), **window) for kind in held.reports}
    combined = held.share("2.0.0", kinds=KEEP_ALIVE, **window)
    traffic.say(f"[clients: held 50%] canary share per client {shares}; keep-alive combined {combined:.2f}")
    assert report.failed == 0, report.describe_failures()
    for kind in KEEP_ALIVE:
        answered = {s.version for s in held[kind].samples if s.ok and window["since"] <= s.sent < window["until"]}
        assert answered == {"1.0.0", "2.0.0"}, f"{kind} answered only by {answered} while 50% was held"
    assert abs(combined - 0.5) <= 0.2, f"keep-alive clients' canary share {combined:.2f}, intended 0.50"
    assert abs(shares["per-request"] - 0.5) <= SHARE_TOLERANCE, shares


def test_blue_green_preview_switch_and_rollback_drop_no_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    bg = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 120}}
    prober = traffic.start_web(2, strategy=bg)

    traffic.apply_web("v2", 2, strategy=bg)
    wait_until(cluster, "md", namespace, "web", "the preview awaiting promotion",
               lambda o: o["status"].get("phase") == "Paused", timeout=240)
    preview_url = service_url(cluster, namespace, "web-preview")
    wait_service_answers(preview_url)  # its endpoints are new: kube-proxy writes them a moment after Paused
    with Prober(preview_url, "linear", rate=RATE, max_requests=50) as preview:
        preview_report = preview.wait(timeout=30)
    assert preview_report.failed == 0 and set(preview_report.versions) == {"2.0.0"}, preview_report.summary()
    assert prober.report().versions.get("2.0.0", 0) == 0, "the main Service served the preview before promotion"

    out = kubectl_model(cluster, "promote", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    wait_for("the switch", lambda: get(cluster, "service", namespace, "web")["spec"]["selector"].get(
        "serving.onnx-operator.io/version") == "v2")
    switched = prober.elapsed()
    time.sleep(MOVED + 2.5)
    assert replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2}, "v1 stays warm"

    out = kubectl_model(cluster, "rollback", "web", "--to", "v1", "-n", namespace)
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    wait_for("traffic back on v1", lambda: get(cluster, "service", namespace, "web")["spec"]["selector"].get(
        "serving.onnx-operator.io/version") == "v1", timeout=30)
    back_in = time.monotonic() - t0
    back = prober.elapsed()
    time.sleep(MOVED + 1)

    report = traffic.finish(prober, "blue/green")
    traffic.say(f"[clients: blue/green] selector back on v1 {back_in:.1f}s after the rollback")
    assert report.failed == 0, report.describe_failures()
    # a new connection reaches the new selector's pods once the endpoints moved; a kept one once it aged
    assert report.share("2.0.0", since=switched + 1.5, until=switched + MOVED + 2.5, kinds=("per-request",)) == 1.0
    assert report.share("2.0.0", since=switched + MOVED, until=switched + MOVED + 2.5) == 1.0
    assert report.share("1.0.0", since=back + MOVED) == 1.0
    assert back_in < 10, "a rollback inside scaleDownDelaySeconds is a selector switch, not a new rollout"


def test_version_whose_pods_never_become_ready_is_rolled_back_without_a_failed_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic, models: ModelStore) -> None:
    cluster.apply(model_version("broken", models.publish(f"live-broken-{namespace}.onnx", make_failing_model()),
                                version="9.0.0"), namespace)
    wait_mv_phase(cluster, namespace, "broken", "Ready")
    canary = {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "5s"}, {"weight": 100}]}}
    prober = traffic.start_web(2, strategy=canary)

    traffic.apply_web("broken", 2, strategy=canary, progressDeadlineSeconds=20)
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
    traffic.apply_web("v2", 2, strategy=canary)
    wait_until(cluster, "md", namespace, "web", "the 50% step holding", lambda o: o["status"].get(
        "phase") == "Paused", timeout=240)
    # Paused says the canary's pods are Ready; the Service's endpoints reach kube-proxy a moment later,
    # so the abort waits until the canary has answered (else it may be aborted before serving anything)
    wait_for("the canary answering before the abort", lambda: prober.report().versions.get("2.0.0", 0) > 0,
             timeout=60)

    out = kubectl_model(cluster, "abort", "web", "-n", namespace)
    assert out.returncode == 0, out.stderr
    wait_until(cluster, "md", namespace, "web", "rolled back", lambda o: condition(
        o, "RolledBack").get("status") == "True", timeout=120)
    wait_for("v2 gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2}, timeout=120)

    report = traffic.finish(prober, "abort")
    assert report.failed == 0, report.describe_failures()


def test_canary_completes_through_operator_kills_without_a_failed_request(
        cluster: ClusterHandle, namespace: str, traffic: Traffic, operator: OperatorProcess) -> None:
    steps = {"type": "Canary", "canary": {"steps": [{"weight": 34, "pause": "3s"}, {"weight": 67, "pause": "3s"},
                                                    {"weight": 100}]}}
    prober = traffic.start_web(3, strategy=steps)
    traffic.apply_web("v2", 3, strategy=steps)
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
