"""KServe's Python ModelServer hosting an ONNX model with onnxruntime: the comparison point of
runtime_bench.py. Runs in its own venv (kserve pins its own dependencies), e.g.

    kserve-venv/bin/python bench/kserve_onnx_server.py --model m.onnx --name m --http_port 8081 --threads 1
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse

DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64",
             np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}


class OnnxModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs: list[Any] = []
        for name, value in zip(names, self.session.run(names, feeds), strict=True):
            out = InferOutput(name=name, shape=list(value.shape), datatype=DATATYPES[value.dtype])
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()  # kserve reads --http_port and friends from sys.argv itself
    logging.getLogger().setLevel(logging.WARNING)
    kserve.ModelServer(enable_grpc=False, enable_latency_logging=False).start(
        [OnnxModel(args.name, args.model, args.threads)])


if __name__ == "__main__":
    main()
