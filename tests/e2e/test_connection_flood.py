"""A connection flood at one pod of a 2-pod ModelDeployment on the real node: the flooded pod stays Ready
(an attacker must not be able to empty the Service) and keeps answering, and a prober through the
Service is answered throughout. A 503 at the connection cap would be retried, as its Retry-After asks;
the test prints how many were."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from localcluster.harness import ClusterHandle
from localcluster.prober import Prober
from tests.e2e.helpers import MD_LABEL, model_deployment, service_url, wait_ready, wait_service_answers
from tests.e2e.test_live_traffic import Traffic
from tests.e2e.test_live_traffic import traffic as live_traffic

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
traffic = live_traffic  # the fixture: v1 and v2 verified
FLOOD = 1500
FLOOD_SECONDS = 20
HEADER_TIMEOUT = 3


def slow_header_flood(ip: str, stop: threading.Event, held: list[int]) -> None:
    """Keeps up to FLOOD connections to one pod, each with an unfinished request line; re-opens the ones
    the pod closes, for FLOOD_SECONDS at most."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + FLOOD_SECONDS
    try:
        for _ in range(200):  # bounded rounds
            if stop.is_set() or time.monotonic() > deadline:
                return
            alive = []
            for sock in socks:
                try:
                    if sock.recv(1024, socket.MSG_DONTWAIT) == b"":
                        sock.close()
                        continue
                    sock.close()  # the pod answered (408/503): it will close
                except BlockingIOError:
                    alive.append(sock)
                except OSError:
                    sock.close()
            socks = alive
            for _ in range(FLOOD - len(socks)):
                try:
                    sock = socket.create_connection((ip, 8080), timeout=1)
                    sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\n")
                    socks.append(sock)
                except OSError:
                    break
            held.append(len(socks))
            time.sleep(0.2)
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_flood_at_one_pod_leaves_the_service_answering_and_the_pod_ready(
        cluster: ClusterHandle, namespace: str, traffic: Traffic) -> None:
    cluster.apply(model_deployment("web", "v1", replicas=2, kwok=False,
                                   runtime={"headerTimeoutSeconds": HEADER_TIMEOUT}), namespace)
    wait_ready(cluster, namespace, "web", timeout=240)
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"{MD_LABEL}=web")["items"]
    target = next(p for p in pods if p["status"].get("podIP", "").startswith("198.18.0."))
    url = service_url(cluster, namespace, "web")
    wait_service_answers(url)  # traffic before kube-proxy serves the new Service would test kube-proxy, not us
    stop, held = threading.Event(), []
    flood = threading.Thread(target=slow_header_flood, args=(target["status"]["podIP"], stop, held), daemon=True)
    prober = Prober(url, "linear", rate=15, max_seconds=FLOOD_SECONDS + 10,
                    timeout=5.0, retry_503=5)
    try:
        prober.start()
        flood.start()
        flood.join(timeout=FLOOD_SECONDS + 30)
    finally:
        stop.set()
        report = prober.stop()
    pod = cluster.kubectl_json("get", "pod", target["metadata"]["name"], "-n", namespace)
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    traffic.say(f"\n[flood at {target['metadata']['name']}] up to {max(held or [0])} slow-header connections held "
                f"open; prober {report.summary()}; {report.retried} answers were 503 and retried; "
                f"{sum(s.latency >= 0.9 for s in report.samples)} took 0.9 s or more (a lost SYN costs 1 s); pod Ready "
                f"{ready['status']}, restarts {restarts}")
    assert max(held or [0]) >= 1000, "the flood never reached the pod"
    assert report.failed == 0, report.describe_failures()
    assert report.total >= 15 * FLOOD_SECONDS * 0.8
    assert ready["status"] == "True" and restarts == 0
