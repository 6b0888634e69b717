"""The model's configuration in Triton's form (model_config.proto as JSON), for the clients that ask for it
(perf_analyzer reads it over gRPC's ModelConfig RPC before it starts)."""

from __future__ import annotations

from typing import Any

from onnx_server.dataplane import DataPlane
from onnx_server.errors import NotReady

# v2 datatypes -> Triton's DataType enum names (BYTES is TYPE_STRING there)
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16",
}


def triton_model_config(plane: DataPlane) -> dict[str, Any]:
    """Triton's config of the served model. A model whose every tensor has a dynamic first dimension gets
    `max_batch_size` = --max-batch-size (at least 1) and `dims` without that dimension, as Triton does;
    any other model gets max_batch_size 0 and its full shapes."""
    model, settings = plane.model, plane.settings
    if model is None:
        raise NotReady("the model is still loading")
    batched = model.batchable

    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": t["name"], "data_type": TRITON_TYPES.get(t["dtype"], "TYPE_INVALID"),
                 "dims": t["shape"][1:] if batched else t["shape"]} for t in items]
    config: dict[str, Any] = {
        "name": settings.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "max_batch_size": settings.max_batch_size if batched else 0,
        "input": tensors(model.inputs),
        "output": tensors([o for o in model.outputs if o["name"] in model.tensor_outputs]),
    }
    if batched and settings.max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(settings.max_delay_ms * 1000)}
    return config
