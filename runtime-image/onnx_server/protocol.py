"""Open Inference Protocol v2 tensors: JSON and the binary extension, in and out, with bounds."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnx_server.errors import BadRequest

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64,
}
DATATYPE = {np.dtype(v): k for k, v in NUMPY.items()}
HEADER_LENGTH = "inference-header-content-length"
MAX_DIMS = 16


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: list[int]  # -1 = dynamic


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None = all
    binary_outputs: set[str]


def _shape(raw: Any, where: str, max_elements: int) -> list[int]:
    if not isinstance(raw, list) or len(raw) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise BadRequest(f"{where}.shape must be a list of at most {MAX_DIMS} non-negative integers")
    count = math.prod(raw)
    if count > max_elements:
        raise BadRequest(f"{where}.shape {raw} has {count} elements; the limit is {max_elements}")
    return list(raw)


def _flatten(data: Any, where: str, limit: int) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
            if len(out) > limit:
                raise BadRequest(f"{where}.data has more elements than its shape")
    return out


def _check_against(meta: TensorMeta, datatype: str, shape: list[int], where: str) -> None:
    if datatype != meta.datatype:
        raise BadRequest(f"{where}.datatype is {datatype}; input {meta.name!r} takes {meta.datatype}")
    if len(shape) != len(meta.shape) or any(m != -1 and m != s for m, s in zip(meta.shape, shape, strict=True)):
        raise BadRequest(f"{where}.shape {shape} does not fit input {meta.name!r} shape {meta.shape}")


def parse_request(body: bytes, header_length: int | None, inputs: dict[str, TensorMeta],
                  max_elements: int) -> InferRequest:
    """Parses a JSON (or binary-extension) inference request into numpy arrays; BadRequest on any flaw."""
    head, tail = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    if header_length is not None and not 0 <= header_length <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("the request must be an object with a non-empty `inputs` list")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(doc["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"{where} must be an object with a string `name`")
        name = item["name"]
        if name not in inputs:
            raise BadRequest(f"{where}.name {name!r} is not an input of this model ({sorted(inputs)})")
        if name in arrays:
            raise BadRequest(f"{where}.name {name!r} is given twice")
        datatype = item.get("datatype")
        if datatype not in NUMPY:
            raise BadRequest(f"{where}.datatype must be one of {sorted(NUMPY)}")
        shape = _shape(item.get("shape"), where, max_elements)
        _check_against(inputs[name], datatype, shape, where)
        dtype = np.dtype(NUMPY[datatype])
        count = math.prod(shape)
        params = item.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(tail):
                raise BadRequest(f"{where}.parameters.binary_data_size must be {count * dtype.itemsize} bytes "
                                 "and lie inside the body")
            arrays[name] = np.frombuffer(tail[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
            continue
        values = _flatten(item.get("data"), where, count)
        if len(values) != count:
            raise BadRequest(f"{where}.data has {len(values)} elements; shape {shape} needs {count}")
        try:
            arrays[name] = np.asarray(values, dtype=dtype).reshape(shape)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadRequest(f"{where}.data does not hold {datatype} values: {exc}") from exc
    missing = sorted(set(inputs) - set(arrays))
    if missing:
        raise BadRequest(f"missing inputs: {missing}")
    wanted, binary = _outputs(doc)
    return InferRequest(doc.get("id") if isinstance(doc.get("id"), str) else None, arrays, wanted, binary)


def _outputs(doc: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    raw = doc.get("outputs")
    binary_all = bool((doc.get("parameters") or {}).get("binary_data_output")) if isinstance(
        doc.get("parameters"), dict) else False
    if raw is None:
        return None, {"*"} if binary_all else set()
    if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
        raise BadRequest("outputs must be a list of objects with a string `name`")
    names = [o["name"] for o in raw]
    binary = {o["name"] for o in raw if binary_all or (o.get("parameters") or {}).get("binary_data")}
    return names, binary


def encode_response(name: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray],
                    binary: set[str]) -> tuple[bytes, int | None]:
    """JSON body, or JSON header + binary tensors; returns (body, header length or None)."""
    items, blobs = [], []
    for out_name, array in outputs.items():
        item: dict[str, Any] = {"name": out_name, "shape": list(array.shape),
                                "datatype": DATATYPE.get(array.dtype, "BYTES")}
        if out_name in binary or "*" in binary:
            blob = np.ascontiguousarray(array).tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = array.reshape(-1).tolist()
        items.append(item)
    doc: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": items}
    if request_id is not None:
        doc["id"] = request_id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
