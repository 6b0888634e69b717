"""Open Inference Protocol v2 tensors in gRPC messages: ModelInferRequest -> InferRequest (the same checks
and texts as the REST parser) and outputs -> ModelInferResponse with raw_output_contents."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from onnx_server.errors import BadRequest
from onnx_server.proto import inference_pb2 as pb
from onnx_server.protocol import (
    DATATYPE,
    DTYPES,
    InferRequest,
    TensorMeta,
    check_complete,
    check_input,
    check_output_names,
)

# the typed `contents` field of each datatype (FP16 and BF16 have none: raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
LENGTH = struct.Struct("<I")


def decode_message(raw: bytes) -> pb.ModelInferRequest:
    try:
        msg: pb.ModelInferRequest = pb.ModelInferRequest.FromString(raw)
        return msg
    except DecodeError as exc:
        raise BadRequest(f"malformed ModelInferRequest: {exc}") from exc


def decode_request(msg: pb.ModelInferRequest, inputs: dict[str, TensorMeta], max_elements: int) -> InferRequest:
    """The request's tensors as numpy arrays; BadRequest (INVALID_ARGUMENT) on any flaw."""
    if not msg.inputs:
        raise BadRequest("the request must have a non-empty `inputs` list")
    raw = msg.raw_input_contents
    if raw and any(t.HasField("contents") for t in msg.inputs):
        raise BadRequest("raw_input_contents and inputs[].contents are both set; use one or the other")
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries; it needs one per input ({len(msg.inputs)})")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(msg.inputs):
        datatype, shape, _ = check_input(i, tensor.name, tensor.datatype, list(tensor.shape), arrays, inputs,
                                         max_elements)
        if raw:
            arrays[tensor.name] = _from_raw(raw[i], datatype, shape, f"raw_input_contents[{i}]")
        else:
            arrays[tensor.name] = _from_contents(tensor.contents, datatype, shape, f"inputs[{i}].contents")
    check_complete(arrays, inputs)
    names = [o.name for o in msg.outputs]
    check_output_names(names)
    return InferRequest(msg.id or None, arrays, names or None, set())


def _from_raw(blob: bytes, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _text_array(_split_bytes(blob, count, where), shape, where)
    dtype = DTYPES[datatype]
    if len(blob) != count * dtype.itemsize:
        raise BadRequest(f"{where} is {len(blob)} bytes; shape {shape} of {datatype} needs {count * dtype.itemsize}")
    return np.frombuffer(blob, dtype=dtype).reshape(shape)


def _split_bytes(blob: bytes, count: int, where: str) -> list[bytes]:
    """BYTES elements, each a 4-byte little-endian length then that many bytes."""
    out: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if len(out) == count:
            raise BadRequest(f"{where} holds more than the {count} BYTES elements of its shape")
        if offset + 4 > len(blob):
            raise BadRequest(f"{where}: element {len(out)} has a truncated 4-byte length prefix")
        (size,) = LENGTH.unpack_from(blob, offset)
        if offset + 4 + size > len(blob):
            raise BadRequest(f"{where}: element {len(out)} claims {size} bytes past the end of the data")
        out.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    if len(out) != count:
        raise BadRequest(f"{where} has {len(out)} BYTES elements; its shape needs {count}")
    return out


def _text_array(elements: Any, shape: list[int], where: str) -> np.ndarray:
    """onnxruntime's string tensors hold text: BYTES elements must be UTF-8."""
    try:
        texts = [bytes(e).decode("utf-8") for e in elements]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{where} holds a BYTES element that is not UTF-8 text: {exc.reason}") from exc
    return np.asarray(texts, dtype=object).reshape(shape)


def _from_contents(contents: pb.InferTensorContents, datatype: str, shape: list[int], where: str) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: {datatype} has no typed contents; send it in raw_input_contents")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise BadRequest(f"{where} holds {others[0]}; {datatype} takes {field}")
    values: Any = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(f"{where}.{field} has {len(values)} elements; shape {shape} needs {count}")
    if datatype == "BYTES":
        return _text_array(values, shape, f"{where}.{field}")
    dtype = DTYPES[datatype]
    wide = np.asarray(values)
    array = wide.astype(dtype)
    if dtype.kind in "iu" and count and not np.array_equal(array, wide):
        raise BadRequest(f"{where}.{field} does not hold {datatype} values: out of range")
    return array.reshape(shape)


def encode_response(name: str, version: str, request_id: str | None,
                    outputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    """Every output in raw_output_contents (in the order of `outputs`), none in typed contents."""
    resp = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id or "")
    for out_name, array in outputs.items():
        datatype = "BYTES" if array.dtype.kind == "O" else DATATYPE.get(array.dtype, "BYTES")
        resp.outputs.add(name=out_name, datatype=datatype, shape=array.shape)
        resp.raw_output_contents.append(_to_raw(array, datatype))
    return resp


def _to_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).tobytes()
    parts = []
    for value in array.reshape(-1):
        data = value if isinstance(value, bytes) else str(value).encode()
        parts += [LENGTH.pack(len(data)), data]
    return b"".join(parts)
