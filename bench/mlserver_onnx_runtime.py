"""An MLServer runtime hosting an ONNX model with onnxruntime: a comparison point of runtime_bench.py
(MLServer has no ONNX runtime of its own). Loaded by `mlserver start` from its own venv; model-settings.json
gives `parameters.uri` (the .onnx file) and `parameters.extra.threads`. A custom REST handler answers
Triton's model configuration (GET /v2/models/{name}/config), which perf_analyzer reads first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime-image"))
from onnx_server.model_config import triton_model_config
from onnx_server.protocol import TensorMeta


class OnnxRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("threads", 1))
        self.session = ort.InferenceSession(self.settings.parameters.uri, options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        names = [o.name for o in payload.outputs] if payload.outputs else self.output_names
        outputs = [NumpyCodec.encode_output(n, v) for n, v in zip(names, self.session.run(names, feeds), strict=True)]
        for out in outputs:  # perf_analyzer 2.50 reads binary_data_size from any output that has `parameters`
            out.parameters = None
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)

    @custom_handler(rest_path="/v2/models/{model_name}/config", rest_method="GET")
    async def model_config(self, model_name: str) -> dict[str, Any]:
        def meta(ts: list[Any]) -> list[TensorMeta]:
            return [TensorMeta(t.name, t.datatype, list(t.shape)) for t in ts]
        inputs, outputs = meta(self.settings.inputs), meta(self.settings.outputs)
        batch = 32 if all(t.shape and t.shape[0] == -1 for t in inputs + outputs) else 0
        return triton_model_config(self.name, inputs, outputs, batch)
