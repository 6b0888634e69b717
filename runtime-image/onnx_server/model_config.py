"""Triton's model configuration (the `model_configuration` extension), built from a model's signature.

Load generators and clients made for Triton (`perf_analyzer`, `tritonclient`'s `get_model_config`) read
it before their first request: `max_batch_size` > 0 tells them the first dimension is the batch and is
left out of `dims`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnx_server.protocol import TensorMeta

# Open Inference Protocol v2 data types -> Triton's DataType enum names
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16",
}


def triton_model_config(name: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta],
                        max_batch_size: int, max_queue_delay_us: int | None = None) -> dict[str, Any]:
    """The model's configuration as Triton's REST API returns it (`GET /v2/models/{name}/config`).

    `max_batch_size` 0 means the model has no batch dimension (dims are the full shapes); otherwise
    every tensor's first dimension is the batch and is dropped from `dims`. `max_queue_delay_us`
    (dynamic batching's wait) adds a `dynamic_batching` section.
    """
    def dims(meta: TensorMeta) -> list[int]:
        return list(meta.shape[1:] if max_batch_size > 0 else meta.shape)

    config: dict[str, Any] = {
        "name": name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}}, "max_batch_size": max_batch_size,
        "input": [{"name": t.name, "data_type": TRITON_TYPES.get(t.datatype, "TYPE_INVALID"),
                   "format": "FORMAT_NONE", "dims": dims(t), "is_shape_tensor": False,
                   "allow_ragged_batch": False, "optional": False} for t in inputs],
        "output": [{"name": t.name, "data_type": TRITON_TYPES.get(t.datatype, "TYPE_INVALID"),
                    "dims": dims(t), "label_filename": "", "is_shape_tensor": False} for t in outputs],
        "instance_group": [{"name": f"{name}_0", "kind": "KIND_CPU", "count": 1, "gpus": []}],
        "default_model_filename": "model.onnx", "parameters": {},
    }
    if max_queue_delay_us is not None and max_batch_size > 1:
        config["dynamic_batching"] = {"preferred_batch_size": [], "max_queue_delay_microseconds": max_queue_delay_us}
    return config
