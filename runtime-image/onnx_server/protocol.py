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
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
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


def check_shape(raw: Any, where: str, max_elements: int) -> list[int]:
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


def check_against(meta: TensorMeta, datatype: str, shape: list[int], where: str) -> None:
    if datatype != meta.datatype:
        raise BadRequest(f"{where}.datatype is {datatype}; input {meta.name!r} takes {meta.datatype}")
    if len(shape) != len(meta.shape) or any(m != -1 and m != s for m, s in zip(meta.shape, shape, strict=True)):
        raise BadRequest(f"{where}.shape {shape} does not fit input {meta.name!r} shape {meta.shape}")


def check_input_name(name: str, datatype: Any, seen: dict[str, np.ndarray], inputs: dict[str, TensorMeta],
                     where: str) -> str:
    """The datatype, once name and datatype are known to be valid and the name is new."""
    if name not in inputs:
        raise BadRequest(f"{where}.name {name!r} is not an input of this model ({sorted(inputs)})")
    if name in seen:
        raise BadRequest(f"{where}.name {name!r} is given twice")
    if datatype not in NUMPY:
        raise BadRequest(f"{where}.datatype must be one of {sorted(NUMPY)}")
    return str(datatype)


def check_complete(arrays: dict[str, np.ndarray], inputs: dict[str, TensorMeta]) -> None:
    missing = sorted(set(inputs) - set(arrays))
    if missing:
        raise BadRequest(f"missing inputs: {missing}")


def check_output_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise BadRequest("outputs names the same output twice")


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
    except RecursionError as exc:  # deeply nested arrays or objects
        raise BadRequest("malformed JSON: nested too deeply") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("the request must be an object with a non-empty `inputs` list")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(doc["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"{where} must be an object with a string `name`")
        name = item["name"]
        datatype = check_input_name(name, item.get("datatype"), arrays, inputs, where)
        shape = check_shape(item.get("shape"), where, max_elements)
        check_against(inputs[name], datatype, shape, where)
        dtype = np.dtype(NUMPY[datatype])
        count = math.prod(shape)
        size = _parameters(item, where).get("binary_data_size")
        if size is not None:
            if datatype == "BYTES":
                raise BadRequest(f"{where}: binary BYTES tensors are not supported; send them as JSON strings")
            if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(tail):
                raise BadRequest(f"{where}.parameters.binary_data_size must be {count * dtype.itemsize} bytes "
                                 "and lie inside the body")
            arrays[name] = np.frombuffer(tail[offset:offset + size], dtype=dtype).reshape(shape)
            offset += size
            continue
        values = _flatten(item.get("data"), where, count)
        if len(values) != count:
            raise BadRequest(f"{where}.data has {len(values)} elements; shape {shape} needs {count}")
        arrays[name] = _array(values, dtype, shape, f"{where}.data", datatype)
    check_complete(arrays, inputs)
    wanted, binary = _outputs(doc)
    return InferRequest(doc.get("id") if isinstance(doc.get("id"), str) else None, arrays, wanted, binary)


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters must be an object")
    return params


def _array(values: list[Any], dtype: np.dtype[Any], shape: list[int], where: str, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"{where} must hold strings for BYTES")
        return np.asarray(values, dtype=object).reshape(shape)
    if any(isinstance(v, (str, dict)) or v is None for v in values):
        raise BadRequest(f"{where} does not hold {datatype} values: found a string, object or null")
    try:
        with np.errstate(all="raise"):
            return np.asarray(values, dtype=dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError, FloatingPointError) as exc:
        raise BadRequest(f"{where} does not hold {datatype} values: {exc}") from exc


def _outputs(doc: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    raw = doc.get("outputs")
    binary_all = bool(_parameters(doc, "request").get("binary_data_output"))
    if raw is None:
        return None, {"*"} if binary_all else set()
    if not isinstance(raw, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw):
        raise BadRequest("outputs must be a list of objects with a string `name`")
    names = [o["name"] for o in raw]
    check_output_names(names)
    binary = {o["name"] for i, o in enumerate(raw)
              if binary_all or _parameters(o, f"outputs[{i}]").get("binary_data")}
    return names, binary


def encode_response(name: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray],
                    binary: set[str]) -> tuple[bytes, int | None]:
    """JSON body, or JSON header + binary tensors; returns (body, header length or None)."""
    items, blobs = [], []
    for out_name, array in outputs.items():
        item: dict[str, Any] = {"name": out_name, "shape": list(array.shape),
                                "datatype": DATATYPE.get(array.dtype, "BYTES")}
        if array.dtype == object:  # BYTES: strings in JSON only
            item["datatype"] = "BYTES"
            item["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        elif out_name in binary or "*" in binary:
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
