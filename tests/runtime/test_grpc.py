"""onnx-server over gRPC, checked with clients we did not write (tritonclient.grpc and .http, Triton's
generated messages, grpc.health.v1): both protocols, every tensor form, every error class, one batcher,
metrics by protocol, SIGTERM drain (the fuzz of ModelInfer messages is in test_grpc_fuzz.py)."""

from __future__ import annotations

import signal
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from localcluster.harness import wait_for
from localcluster.models import make_model
from tests.grpc_infer import grpc_infer, wait_grpc_ready
from tests.runtime.conftest import ServerProcess, model_dir
from tests.runtime.models import TABLE, half_model, lookup_model, text_model
from tests.runtime.test_server import X, expected


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    started: dict[str, ServerProcess] = {}

    def start(data: bytes, name: str, *extra: str) -> ServerProcess:
        if name not in started:
            started[name] = ServerProcess(model_dir(tmp_path_factory.mktemp(name), data), *extra, name=name)
        return started[name]
    yield start
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="module")
def linear(serve: Callable[..., ServerProcess]) -> ServerProcess:
    return serve(make_model(), "linear", "--max-body-bytes", "65536")


@pytest.fixture
def client(linear: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(linear.grpc_target) as c:
        yield c


@pytest.fixture
def stub(linear: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(linear.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def typed_request(model: str, name: str, datatype: str, shape: list[int], **contents: list) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents))
    return req


def grpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_health_and_metadata_agree_over_both_protocols(linear: ServerProcess,
                                                       client: grpcclient.InferenceServerClient) -> None:
    rest = httpclient.InferenceServerClient(linear.url.removeprefix("http://"))

    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("linear")
    assert rest.is_server_live() and rest.is_server_ready() and rest.is_model_ready("linear")
    meta = client.get_model_metadata("linear", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    by_rest = rest.get_model_metadata("linear")
    assert [(o["name"], o["datatype"], [int(d) for d in o["shape"]]) for o in meta["outputs"]] == \
        [(o["name"], o["datatype"], o["shape"]) for o in by_rest["outputs"]]
    assert client.get_server_metadata(as_json=True)["name"] == "onnx-server"
    assert client.get_model_metadata("linear", "1.0.0").name == "linear"


def test_grpc_health_service_reports_serving(linear: ServerProcess) -> None:
    with grpc.insecure_channel(linear.grpc_target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for service in ("", "inference.GRPCInferenceService"):
            assert check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING


def test_model_config_rpc_answers_perf_analyzer_with_triton_fields(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("linear", as_json=True)["config"]

    assert config["name"] == "linear" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 1  # a batch dimension; dims without it, as Triton gives them
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": ["2"]}]


def test_model_config_is_the_same_over_rest_and_grpc(linear: ServerProcess,
                                                    client: grpcclient.InferenceServerClient) -> None:
    over_grpc = client.get_model_config("linear", as_json=True)["config"]
    over_rest = httpx.get(f"{linear.url}/v2/models/linear/config").json()

    assert over_rest["name"] == over_grpc["name"] and over_rest["max_batch_size"] == over_grpc["max_batch_size"]
    assert [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in over_grpc["input"]] == \
        [(t["name"], t["data_type"], t["dims"]) for t in over_rest["input"]]


def test_raw_tensors_match_onnxruntime_and_the_rest_answer(linear: ServerProcess,
                                                          client: grpcclient.InferenceServerClient) -> None:
    x = np.asarray(X, dtype=np.float32)
    result = client.infer("linear", [infer_input("x", x, "FP32")], request_id="r7")
    rest = httpclient.InferenceServerClient(linear.url.removeprefix("http://"))
    tensor = httpclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    by_rest = rest.infer("linear", [tensor]).as_numpy("y")

    np.testing.assert_allclose(result.as_numpy("y"), expected(X), rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("y"), by_rest)
    response = result.get_response()
    assert response.id == "r7" and response.model_version == "1.0.0"
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField("contents")


def test_typed_contents_are_accepted_and_answered_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    req = typed_request("linear", "x", "FP32", [2, 4], fp32_contents=[v for row in X for v in row])

    response = stub.ModelInfer(req, timeout=30)

    [out] = response.outputs
    assert out.name == "y" and out.datatype == "FP32" and list(out.shape) == [2, 2]
    values = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 2)
    np.testing.assert_allclose(values, expected(X), rtol=1e-6)


def test_int64_raw_and_typed_give_the_table_rows(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(lookup_model(), "lookup")
    idx = np.asarray([[3], [7]], dtype=np.int64)

    raw = grpc_infer(srv.grpc_target, "lookup", {"idx": idx})["y"]
    with grpc.insecure_channel(srv.grpc_target) as channel:
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request("lookup", "idx", "INT64", [2, 1], int64_contents=[3, 7]), timeout=30)

    np.testing.assert_array_equal(raw, TABLE[[3, 7]].reshape(2, 1, 3))
    np.testing.assert_array_equal(np.frombuffer(typed.raw_output_contents[0], np.float32).reshape(2, 1, 3), raw)


def test_bytes_travel_length_prefixed_both_ways(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(text_model(), "text")
    words = np.asarray([b"hello", "grüße".encode(), b""], dtype=object)

    echo = grpc_infer(srv.grpc_target, "text", {"s": words}, outputs=["echo"])["echo"]
    with grpc.insecure_channel(srv.grpc_target) as channel:
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request("text", "s", "BYTES", [3], bytes_contents=list(words)), timeout=30)

    assert list(echo) == list(words)
    raw = typed.raw_output_contents[0]
    assert raw == b"".join(struct.pack("<I", len(w)) + w for w in words)


def test_fp16_travels_raw_and_requested_outputs_are_the_only_ones(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(half_model(), "half")
    h = np.asarray([[0.5, -2.0, 65504.0]], dtype=np.float16)

    only_same = grpc_infer(srv.grpc_target, "half", {"h": h}, outputs=["same"])
    both = grpc_infer(srv.grpc_target, "half", {"h": h})

    assert list(only_same) == ["same"] and only_same["same"].dtype == np.float16
    np.testing.assert_array_equal(only_same["same"], h)
    np.testing.assert_array_equal(both["double"], h.astype(np.float32) * 2)
    with grpc.insecure_channel(srv.grpc_target) as channel:
        err = grpc_error(lambda: service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request("half", "h", "FP16", [1, 3], fp32_contents=[1, 2, 3]), timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in (err.details() or "")


def test_tritonclient_http_gets_the_same_answers_as_grpc(serve: Callable[..., ServerProcess]) -> None:
    cases = [(lookup_model(), "lookup", "idx", np.asarray([[3], [7]], np.int64), "INT64", "y", True),
             (text_model(), "text", "s", np.asarray([b"hi", b"there"], dtype=object), "BYTES", "echo", False),
             (half_model(), "half", "h", np.asarray([[0.5, -2.0, 8.0]], np.float16), "FP16", "same", True)]
    for data, name, input_name, array, datatype, output, binary in cases:
        srv = serve(data, name)
        rest = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
        tensor = httpclient.InferInput(input_name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput(output, binary_data=binary)]

        by_rest = rest.infer(name, [tensor], outputs=wanted).as_numpy(output)
        by_grpc = grpc_infer(srv.grpc_target, name, {input_name: array}, outputs=[output])[output]

        if datatype == "BYTES":  # JSON gives text, raw_output_contents bytes
            assert [str(v) for v in by_rest] == [bytes(v).decode() for v in by_grpc] == ["hi", "there"]
        else:
            np.testing.assert_array_equal(by_rest, by_grpc)
        with pytest.raises(InferenceServerException, match="is not served here"):
            rest.infer("nope", [tensor])


@pytest.mark.parametrize(("shape", "datatype", "fragment"), [
    ([1, 5], "FP32", "does not fit input 'x' shape [-1, 4]"),
    ([1, 4], "INT64", "takes FP32"),
    ([1000000000, 4], "FP32", "the limit is"),
])
def test_invalid_inputs_get_invalid_argument_with_the_rest_text(linear: ServerProcess,
                                                                stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                                shape: list[int], datatype: str,
                                                                fragment: str) -> None:
    count = min(int(np.prod(shape)), 8)
    field = "fp32_contents" if datatype == "FP32" else "int64_contents"
    err = grpc_error(lambda: stub.ModelInfer(typed_request("linear", "x", datatype, shape, **{field: [1] * count})))
    rest = httpx.post(linear.infer_url, json={"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                                                          "data": [1] * count}]})

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in (err.details() or "")
    assert rest.status_code == 400 and rest.json()["error"] == err.details()


def test_raw_and_typed_contents_in_one_request_are_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    req = typed_request("linear", "x", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4])
    req.raw_input_contents.append(np.ones(4, np.float32).tobytes())

    err = grpc_error(lambda: stub.ModelInfer(req, timeout=30))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "both set" in (err.details() or "")


@pytest.mark.parametrize(("raw", "fragment"), [
    ([b"\0" * 12], "needs 16"),
    ([b"\0" * 16, b"\0" * 16], "one per input"),
])
def test_raw_contents_that_do_not_fit_are_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub,
                                                  raw: list[bytes], fragment: str) -> None:
    req = pb.ModelInferRequest(model_name="linear", raw_input_contents=raw)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])

    err = grpc_error(lambda: stub.ModelInfer(req, timeout=30))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in (err.details() or "")


def test_unknown_model_or_version_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    x = infer_input("x", np.ones((1, 4), np.float32), "FP32")
    for call in (lambda: client.infer("nope", [x]), lambda: client.infer("linear", [x], model_version="9"),
                 lambda: client.get_model_metadata("nope"), lambda: client.get_model_config("nope")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.NOT_FOUND" and "is not served here" in info.value.message()


def test_messages_over_max_body_bytes_are_resource_exhausted(client: grpcclient.InferenceServerClient) -> None:
    big = np.ones((5000, 4), np.float32)  # 80 000 bytes > --max-body-bytes 65536

    with pytest.raises(InferenceServerException) as info:
        client.infer("linear", [infer_input("x", big, "FP32")])

    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_rest_and_grpc_requests_share_batches_and_are_counted_by_protocol(
        serve: Callable[..., ServerProcess]) -> None:
    srv = serve(make_model(), "batched", "--max-batch-size", "16", "--max-delay-ms", "200")
    rows = [np.asarray([[float(i), 1.0, -float(i), 2.0]], np.float32) for i in range(12)]
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        if i % 2:
            results[i] = grpc_infer(srv.grpc_target, "batched", {"x": rows[i]})["y"]
        else:
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": rows[i].ravel().tolist()}]}
            out = httpx.post(f"{srv.url}/v2/models/batched/infer", json=body, timeout=30).json()["outputs"][0]
            results[i] = np.asarray(out["data"], np.float32).reshape(1, 2)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    for i, row in enumerate(rows):
        np.testing.assert_allclose(results[i], expected(row.tolist()), rtol=1e-6)
    metrics = httpx.get(f"{srv.url}/metrics").text
    for protocol in ("rest", "grpc"):
        assert (f'onnx_server_requests_total{{code="200",model="batched",modeldeployment="",'
                f'protocol="{protocol}",version="1.0.0"}} 6.0'
                in metrics)
    value = {ln.split()[0]: float(ln.split()[-1]) for ln in metrics.splitlines()
             if ln.startswith("onnx_server_batch_size_")}
    assert value['onnx_server_batch_size_sum{model="batched",modeldeployment="",version="1.0.0"}'] / \
        value['onnx_server_batch_size_count{model="batched",modeldeployment="",version="1.0.0"}'] > 1.5


def test_a_call_its_client_gave_up_on_is_not_counted_as_a_server_error(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(make_model(), "batched", "--max-batch-size", "16", "--max-delay-ms", "200")

    # the batch waits 200 ms for company; the client only 50 ms
    with grpcclient.InferenceServerClient(srv.grpc_target) as client, \
            pytest.raises(InferenceServerException) as info:
        client.infer("batched", [infer_input("x", np.ones((1, 4), np.float32), "FP32")], client_timeout=0.05)

    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    wait_for("the cancelled call to be counted", lambda: 'code="499",model="batched",modeldeployment="",'
             'protocol="grpc"'
             in httpx.get(f"{srv.url}/metrics").text, timeout=10, interval=0.1)
    assert 'code="500"' not in httpx.get(f"{srv.url}/metrics").text


def draining(channel: grpc.Channel) -> bool:
    """True once the server's health says NOT_SERVING or it refuses calls (UNAVAILABLE)."""
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[no-any-return]


def test_sigterm_finishes_grpc_calls_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path, make_model()), "--max-batch-size", "4", "--max-delay-ms", "1500")
    result: dict[str, np.ndarray] = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "y", grpc_infer(srv.grpc_target, "linear", {"x": np.asarray(X[:1], np.float32)})["y"]))
    t.start()
    wait_for("the gRPC call to wait in the batch queue", lambda: 'onnx_server_in_flight_requests{model="linear",'
             'modeldeployment="",protocol="grpc",version="1.0.0"} 1.0' in httpx.get(f"{srv.url}/metrics").text,
             timeout=10, interval=0.05)

    srv.proc.send_signal(signal.SIGTERM)
    with grpc.insecure_channel(srv.grpc_target) as channel:
        # a call racing the signal may still be taken (and finished); "new" means after the drain began,
        # which health shows: NOT_SERVING, or the call refused once the server stopped accepting
        wait_for("the drain to begin", lambda: draining(channel), timeout=10, interval=0.02)
        late = grpc_error(lambda: service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request("linear", "x", "FP32", [1, 4], fp32_contents=[1, 2, 3, 4]), timeout=10))

    t.join(timeout=30)
    np.testing.assert_allclose(result["y"], expected(X[:1]), rtol=1e-6)
    assert late.code() == grpc.StatusCode.UNAVAILABLE
    assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_no_grpc_serves_rest_only(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path, make_model()), "--no-grpc")
    try:
        assert httpx.get(f"{srv.url}/v2/health/ready").status_code == 200
        assert "gRPC listening" not in srv.log.read_text()
    finally:
        srv.stop()


def test_the_helper_waits_for_readiness_and_infers(linear: ServerProcess) -> None:
    wait_grpc_ready(linear.grpc_target, "linear", timeout=10)

    y = grpc_infer(linear.grpc_target, "linear", {"x": np.asarray(X, np.float32)})["y"]

    np.testing.assert_allclose(y, expected(X), rtol=1e-6)
