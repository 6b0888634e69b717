"""A fuzz of ModelInfer messages (byte flips, cuts and splices of a valid one, and random structures):
never INTERNAL (or UNKNOWN), and the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.grpc_infer import grpc_infer
from tests.runtime.conftest import ServerProcess
from tests.runtime.test_server import X, expected

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def valid_request() -> bytes:
    req = pb.ModelInferRequest(model_name="linear", id="f")
    req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    req.outputs.add(name="y")
    req.raw_input_contents.append(np.asarray(X, np.float32).tobytes())
    return bytes(req.SerializeToString())


SEED = valid_request()
tensor = st.builds(
    lambda name, datatype, shape, contents: pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape, contents=contents),
    st.sampled_from(["x", "y", "", "x\0"]),
    st.sampled_from(["FP32", "FP16", "INT64", "BYTES", "BOOL", "UINT8", "BF16", "fp32", ""]),
    st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), max_size=5),
    st.builds(pb.InferTensorContents, fp32_contents=st.lists(st.floats(width=32), max_size=10),
              int64_contents=st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), max_size=3),
              bytes_contents=st.lists(st.binary(max_size=8), max_size=3)))
messages = st.one_of(
    # byte-level: flips, cuts and splices of a valid message
    st.builds(lambda at, value: SEED[:at] + bytes([value]) + SEED[at + 1:],
              st.integers(0, len(SEED) - 1), st.integers(0, 255)),
    st.builds(lambda at: SEED[:at], st.integers(0, len(SEED))),
    st.builds(lambda at, junk: SEED[:at] + junk + SEED[at:], st.integers(0, len(SEED)), st.binary(max_size=40)),
    # structure-level: any inputs, raw blobs and requested outputs
    st.builds(lambda inputs, raw, outs: pb.ModelInferRequest(
        model_name="linear", inputs=inputs, raw_input_contents=raw,
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outs]).SerializeToString(),
        st.lists(tensor, max_size=3), st.lists(st.binary(max_size=64), max_size=3),
        st.lists(st.sampled_from(["y", "z", ""]), max_size=3)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=messages)
def test_mutated_model_infer_messages_never_get_internal(server: ServerProcess, body: bytes) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=30)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED), (err.code(), err.details())


def test_server_keeps_serving_after_the_fuzz(server: ServerProcess) -> None:
    y = grpc_infer(server.grpc_target, "linear", {"x": np.asarray(X, np.float32)})["y"]

    np.testing.assert_allclose(y, expected(X), rtol=1e-6)
    assert server.proc.poll() is None
    assert "internal error" not in server.log.read_text()
