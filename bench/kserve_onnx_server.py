"""KServe's Python ModelServer hosting an ONNX model with onnxruntime: a comparison point of
runtime_bench.py. Runs in its own venv (kserve pins its own dependencies), e.g.

    kserve-venv/bin/python bench/kserve_onnx_server.py --model m.onnx --name m --http_port 8081 --threads 1

Like KServe's own `get_predict_response`, it honours the requested outputs and binary outputs, and its
metadata lists the model's inputs and outputs; GET /v2/models/{name}/config answers Triton's model
configuration (what perf_analyzer reads first).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest import v2_endpoints
from kserve.protocol.rest.server import RESTServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime-image"))
from onnx_server.model_config import triton_model_config
from onnx_server.protocol import DATATYPE, TensorMeta

ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32",
             "tensor(bool)": "BOOL", "tensor(float16)": "FP16", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8"}


def tensors(args: list[Any]) -> list[TensorMeta]:
    return [TensorMeta(a.name, ORT_TYPES.get(a.type, "BYTES"),
                       [d if isinstance(d, int) else -1 for d in a.shape]) for a in args]


class OnnxModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.inputs, self.outputs = tensors(self.session.get_inputs()), tensors(self.session.get_outputs())
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in self.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in self.outputs]

    def config(self) -> dict[str, Any]:
        batch = 32 if all(t.shape and t.shape[0] == -1 for t in self.inputs + self.outputs) else 0
        return triton_model_config(self.name, self.inputs, self.outputs, batch)

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in payload.request_outputs] if payload.request_outputs \
            else [t.name for t in self.outputs]
        outputs: list[Any] = []
        for name, value in zip(names, self.session.run(names, feeds), strict=True):
            out = InferOutput(name=name, shape=list(value.shape), datatype=DATATYPE[value.dtype])
            out.set_data_from_numpy(value, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


class CompactResponse(v2_endpoints.InferenceResponse):  # type: ignore[misc]
    """Leaves out null fields: perf_analyzer 2.50 reads `binary_data_size` from any output that has a
    `parameters` member, and KServe writes `"parameters": null` in every JSON response."""

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return dict(super().model_dump(**{**kwargs, "exclude_none": True}))


def add_config_route(model: OnnxModel) -> None:
    register = RESTServer._register_endpoints

    def with_config(self: RESTServer, app: Any) -> None:
        register(self, app)
        app.add_api_route(f"/v2/models/{model.name}/config", model.config, methods=["GET"])
    RESTServer._register_endpoints = with_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()  # kserve reads --http_port and friends from sys.argv itself
    logging.getLogger().setLevel(logging.WARNING)
    model = OnnxModel(args.name, args.model, args.threads)
    add_config_route(model)
    v2_endpoints.InferenceResponse = CompactResponse
    kserve.ModelServer(enable_grpc=False, enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
