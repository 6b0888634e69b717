"""Payload logging of real onnx-server processes to real sinks on 127.0.0.1: CloudEvents with the right
attributes and tensors, exact counter sampling, a dead or hanging sink that costs inference nothing, an https
sink checked against its CA, and the overhead of logging every request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx_server.payload_log import CounterSampler
from prometheus_client.parser import text_string_to_metric_families

from localcluster.harness import wait_for
from localcluster.models import make_model
from tests.grpc_infer import grpc_infer
from tests.payload_sink import EventSink
from tests.runtime.conftest import ServerProcess, free_port, model_dir
from tests.runtime.stores import tls_context

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
# logging on (sink up, down or hanging): the p99 of inference may grow by at most this factor over logging off
P99_FACTOR = 1.5
P99_SLACK_SECONDS = 0.003  # millisecond p99s on a shared machine: a scheduler hiccup is not a factor
WARM, SENT = 50, 650  # requests to each server, the first WARM not measured


@pytest.fixture
def sink() -> Iterator[EventSink]:
    s = EventSink()
    yield s
    s.stop()


def serve(tmp: Path, *args: str) -> ServerProcess:
    return ServerProcess(model_dir(tmp, make_model()), "--namespace", "team-a", "--model-deployment", "web", *args)


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def compare(off: ServerProcess, on: ServerProcess) -> tuple[list[float], list[float]]:
    """Latencies of SENT requests to each server, alternating request by request (both see the same moments of
    the shared machine); the warm-up ones left out."""
    with httpx.Client(timeout=10) as client:
        latencies(off, client, WARM), latencies(on, client, WARM)
        took_off, took_on = [], []
        for _ in range(SENT - WARM):
            took_off += latencies(off, client, 1)
            took_on += latencies(on, client, 1)
    return took_off, took_on


def latencies(server: ServerProcess, client: httpx.Client, count: int) -> list[float]:
    took = []
    for _ in range(count):
        start = time.perf_counter()
        resp = client.post(server.infer_url, json=BODY)
        took.append(time.perf_counter() - start)
        assert resp.status_code == 200, resp.text
    return took


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def test_counter_sampler_takes_exactly_the_rate_evenly_spread() -> None:
    sampler = CounterSampler(0.1)

    taken = [i for i in range(100) if sampler.take()]

    assert taken == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 1000), (0.25, 250), (0.333, 333)])
def test_counter_sampler_count_over_a_thousand_requests(rate: float, expected: int) -> None:
    sampler = CounterSampler(rate)

    assert sum(sampler.take() for _ in range(1000)) == expected


def test_request_and_response_arrive_as_cloudevents_with_ids_and_tensors(tmp_path: Path, sink: EventSink) -> None:
    server = serve(tmp_path, "--payload-log-url", sink.url)
    try:
        answer = httpx.post(server.infer_url, json={**BODY, "id": "req-42"}, timeout=10).json()
        events = {e.id: e for e in sink.wait_count(2)}
    finally:
        server.stop()

    assert set(events) == {"req-42-request", "req-42-response"}
    request, response = events["req-42-request"], events["req-42-response"]
    for event in (request, response):
        assert event.headers["ce-specversion"] == "1.0"
        assert event.headers["ce-source"] == "/namespaces/team-a/models/linear/versions/1.0.0"
        assert (event.headers["ce-model"], event.headers["ce-modelversion"]) == ("linear", "1.0.0")
        assert (event.headers["ce-namespace"], event.headers["ce-requestid"]) == ("team-a", "req-42")
        assert event.headers["ce-modeldeployment"] == "web"
        assert event.headers["content-type"] == "application/json"
        assert event.body["id"] == "req-42"
    assert request.headers["ce-type"] == "io.onnx-operator.inference.request"
    assert response.headers["ce-type"] == "io.onnx-operator.inference.response"
    assert request.body["inputs"] == BODY["inputs"]
    assert response.body["outputs"] == answer["outputs"]


def test_grpc_request_without_id_gets_one_shared_by_its_two_events(tmp_path: Path, sink: EventSink) -> None:
    server = serve(tmp_path, "--payload-log-url", sink.url)
    try:
        out = grpc_infer(server.grpc_target, "linear", {"x": np.array([[1, 2, 3, 4]], dtype=np.float32)})
        events = sink.wait_count(2)
    finally:
        server.stop()

    ids = {e.headers["ce-requestid"] for e in events}
    assert len(ids) == 1 and len(next(iter(ids))) == 32, ids
    response = next(e for e in events if e.headers["ce-type"].endswith("response"))
    assert response.body["outputs"][0]["data"] == pytest.approx(out[response.body["outputs"][0]["name"]].ravel())


def test_a_hundred_requests_at_rate_one_tenth_give_exactly_ten_events(tmp_path: Path, sink: EventSink) -> None:
    server = serve(tmp_path, "--payload-log-url", sink.url, "--payload-log-sample-rate", "0.1",
                   "--payload-log-mode", "request")
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(100):
                assert client.post(server.infer_url, json={**BODY, "id": f"r{i}"}).status_code == 200
        wait_for("every sampled event sent", lambda: metric(server, "onnx_server_payload_log_events_total") == 10)
        dropped = metric(server, "onnx_server_payload_log_dropped_total")
    finally:
        server.stop()

    events = sink.received()
    assert sorted(e.headers["ce-requestid"] for e in events) == sorted(f"r{i}" for i in range(0, 100, 10))
    assert all(e.headers["ce-type"].endswith("request") for e in events)
    assert dropped == 0


@pytest.mark.parametrize("sink_state", ["down", "hanging"])
def test_sink_down_or_hanging_costs_inference_nothing_and_drops_are_counted(
        tmp_path: Path, sink_state: str, capsys: pytest.CaptureFixture[str]) -> None:
    hanging = EventSink(hang=True) if sink_state == "hanging" else None
    url = hanging.url if hanging else f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    off = serve(tmp_path / "off")
    on = serve(tmp_path / "on", "--payload-log-url", url, "--payload-log-max-queue-events", "20")
    try:
        took_off, took_on = compare(off, on)
        # every request's two events end up dropped: failed, refused by the full queue, or while the sink is down
        wait_for("every event dropped and counted",
                 lambda: metric(on, "onnx_server_payload_log_dropped_total") == 2 * SENT, timeout=30)
        sent = metric(on, "onnx_server_payload_log_events_total")
        reasons = {r: metric(on, "onnx_server_payload_log_dropped_total", reason=r)
                   for r in ("queue_full", "sink_failed", "sink_down")}
    finally:
        on.stop(), off.stop()
        if hanging:
            hanging.stop()

    with capsys.disabled():
        print(f"\n[payload log, sink {sink_state}] p50 {1000 * pct(took_off, 50):.2f} -> "
              f"{1000 * pct(took_on, 50):.2f} ms, p99 {1000 * pct(took_off, 99):.2f} -> "
              f"{1000 * pct(took_on, 99):.2f} ms (off -> on); drops {reasons}")
    assert sent == 0
    assert sum(reasons.values()) == 2 * SENT
    if sink_state == "hanging":
        assert reasons["queue_full"] > 0, "a sink that never answers must fill the bounded queue"
    assert pct(took_on, 99) <= P99_FACTOR * pct(took_off, 99) + P99_SLACK_SECONDS


def test_https_sink_is_reached_only_through_its_ca(tmp_path: Path) -> None:
    tls_sink = EventSink(tls=tls_context(tmp_path))
    trusted = serve(tmp_path / "trusted", "--payload-log-url", tls_sink.url,
                    "--payload-log-ca-file", str(tmp_path / "ca.pem"))
    untrusted = serve(tmp_path / "untrusted", "--payload-log-url", tls_sink.url)  # the system's CAs only
    try:
        assert httpx.post(trusted.infer_url, json={**BODY, "id": "tls-1"}, timeout=10).status_code == 200
        assert httpx.post(untrusted.infer_url, json={**BODY, "id": "tls-2"}, timeout=10).status_code == 200
        events = tls_sink.wait_count(2)
        wait_for("the untrusted server's events dropped", lambda: metric(
            untrusted, "onnx_server_payload_log_dropped_total") == 2, timeout=30)
    finally:
        trusted.stop(), untrusted.stop()
        tls_sink.stop()

    assert {e.headers["ce-requestid"] for e in events} == {"tls-1"}
    assert tls_sink.url.startswith("https://")


def test_logging_every_request_overhead_p50_p99_against_off(tmp_path: Path, sink: EventSink,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    off = serve(tmp_path / "off")
    on = serve(tmp_path / "on", "--payload-log-url", sink.url, "--payload-log-sample-rate", "1.0")
    try:
        took_off, took_on = compare(off, on)
        wait_for("every event delivered", lambda: metric(on, "onnx_server_payload_log_events_total") == 2 * SENT,
                 timeout=60)
    finally:
        on.stop(), off.stop()

    with capsys.disabled():
        print(f"\n[payload log overhead, rate 1.0, both] p50 off {1000 * pct(took_off, 50):.2f} ms on "
              f"{1000 * pct(took_on, 50):.2f} ms; p99 off {1000 * pct(took_off, 99):.2f} ms on "
              f"{1000 * pct(took_on, 99):.2f} ms ({len(took_on)} requests each)")
    assert len(sink.received()) == 2 * SENT
    assert pct(took_on, 99) <= P99_FACTOR * pct(took_off, 99) + P99_SLACK_SECONDS
