"""Open Inference Protocol v2 tensors: JSON and the binary extension, in and out, with bounds."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from onnx_server.errors import BadRequest

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
DATATYPE = {np.dtype(v): k for k, v in NUMPY.items()}
DTYPES = {k: np.dtype(v) for k, v in NUMPY.items()}  # built once: np.dtype() per request costs more than a lookup
FLOAT_MAX = {d: float(np.finfo(d).max) for d in DTYPES.values() if d.kind == "f"}
INT_RANGE: dict[np.dtype[Any], Any] = {d: np.iinfo(d) for d in DTYPES.values() if d.kind in "iu"}
HEADER_LENGTH = "inference-header-content-length"
MAX_DIMS = 16
SMALL_ARRAY = 64  # elements
FAST_JSON_BYTES = 4096  # smaller JSON requests are read by orjson alone: as fast, nothing to gain
BUFFERED_JSON_MAX = 256 << 10  # and larger ones too: a simdjson parser keeps the buffer of its largest document
BOM = b"\xef\xbb\xbf"
# the datatypes whose JSON numbers simdjson reads straight into a buffer: doubles, or 64-bit integers
BUFFERED = {"FP16": "d", "FP32": "d", "FP64": "d", "INT8": "i", "INT16": "i", "INT32": "i", "INT64": "i",
            "UINT8": "i", "UINT16": "i", "UINT32": "i"}


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


def decimal(raw: str | None, field: str) -> int | None:
    """An HTTP header holding a non-negative decimal integer (ASCII digits only), or None when absent."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"{field} must be a non-negative decimal integer, not {raw[:40]!r}")
    return int(raw)


def check_shape(raw: Any, where: str, max_elements: int) -> list[int]:
    if type(raw) is not list or len(raw) > MAX_DIMS:
        raise BadRequest(f"{where}.shape must be a list of at most {MAX_DIMS} non-negative integers")
    count = 1
    for d in raw:
        if type(d) is not int or d < 0:  # type(): a bool is an int subclass, and true is no dimension
            raise BadRequest(f"{where}.shape must be a list of at most {MAX_DIMS} non-negative integers")
        count *= d
    if count > max_elements:
        raise BadRequest(f"{where}.shape {raw} has {count} elements; the limit is {max_elements}")
    return raw


def _flatten(data: Any, where: str, limit: int) -> list[Any]:
    """Flattens nested lists of strings (BYTES) without recursion, stopping past `limit` elements."""
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
            if len(out) > limit:
                raise BadRequest(f"{where} has more elements than its shape")
    return out


def check_against(meta: TensorMeta, datatype: str, shape: list[int], where: str) -> None:
    if datatype != meta.datatype:
        raise BadRequest(f"{where}.datatype is {datatype}; input {meta.name!r} takes {meta.datatype}")
    if shape != meta.shape and (len(shape) != len(meta.shape) or any(
            m != -1 and m != s for m, s in zip(meta.shape, shape, strict=True))):
        raise BadRequest(f"{where}.shape {shape} does not fit input {meta.name!r} shape {meta.shape}")


def check_input_name(name: str, datatype: Any, seen: dict[str, np.ndarray], inputs: dict[str, TensorMeta],
                     where: str) -> str:
    """The datatype, once name and datatype are known to be valid and the name is new."""
    if name not in inputs:
        raise BadRequest(f"{where}.name {name!r} is not an input of this model ({sorted(inputs)})")
    if name in seen:
        raise BadRequest(f"{where}.name {name!r} is given twice")
    if not isinstance(datatype, str) or datatype not in NUMPY:
        raise BadRequest(f"{where}.datatype must be one of {sorted(NUMPY)}")
    return str(datatype)


def check_input(i: int, name: str, datatype: Any, raw_shape: Any, seen: dict[str, np.ndarray],
                inputs: dict[str, TensorMeta], max_elements: int) -> tuple[str, list[int], int]:
    """Input `i` (either protocol) against the model: (datatype, shape, elements), or BadRequest naming
    `inputs[i]` and its first flaw. The common case, a new input name with the model's datatype and a
    fitting shape of plain integers, is accepted in one pass; anything else goes through the checks one by
    one (check_input_name, check_shape, check_against), which find the first flaw in that order."""
    meta = inputs.get(name)
    if meta is not None and datatype == meta.datatype and name not in seen and type(raw_shape) is list \
            and len(raw_shape) == len(meta.shape) <= MAX_DIMS:
        count = 1
        for d, m in zip(raw_shape, meta.shape, strict=True):
            if type(d) is not int or d < 0 or (m != -1 and m != d):
                break
            count *= d
        else:
            if count <= max_elements:
                return meta.datatype, raw_shape, count
    where = f"inputs[{i}]"
    datatype = check_input_name(name, datatype, seen, inputs, where)
    shape = check_shape(raw_shape, where, max_elements)
    check_against(inputs[name], datatype, shape, where)
    return datatype, shape, math.prod(shape)


def check_complete(arrays: dict[str, np.ndarray], inputs: dict[str, TensorMeta]) -> None:
    if len(arrays) == len(inputs):  # every name in arrays was checked to be an input, once
        return
    missing = sorted(set(inputs) - set(arrays))
    if missing:
        raise BadRequest(f"missing inputs: {missing}")


def check_output_names(names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise BadRequest("outputs names the same output twice")


class NotCommon(Exception):
    """The document is not the common case the buffered reader takes: orjson reads it."""


class JsonReader:
    """Reads a JSON inference request as orjson.loads does, with one difference: in a document of 4-256 KiB
    whose every input is a number tensor sent flat (the common case of a large request), each input's `data` comes
    back as a numpy array (float64 for float datatypes, int64 for integers) read by simdjson straight into a
    buffer, without a Python object per number: for 3,072 floats about 50 instead of 130 us. data_array() checks
    such an array exactly as it checks a list (a float tensor's integers above 2**53 may round differently by one
    unit in the last place). Any other document, and any doubt (a nested or mixed `data`, a '[' inside a string,
    a duplicate key, a byte order mark, an integer beyond 64 bits, a malformed document), is read by orjson
    from the start, which also names the error. One simdjson parser per calling thread (the documents it takes
    are parsed on the event loop), replaced after simdjson refuses a document."""

    def __init__(self) -> None:
        self.local = threading.local()

    def load(self, head: bytes) -> Any:
        if FAST_JSON_BYTES <= len(head) <= BUFFERED_JSON_MAX:
            try:
                return self._read(head)
            except NotCommon:  # parsed, but not the common case: the parser is as good as before
                pass
            except Exception:  # simdjson refused it: orjson reads it again and names the flaw
                self.local.parser = None
        return load_json(head)

    def _read(self, head: bytes) -> dict[str, Any]:
        if head.startswith(BOM):  # simdjson skips it, orjson refuses it
            raise NotCommon
        brackets = _brackets(head)
        if brackets is None:
            raise NotCommon
        parser = getattr(self.local, "parser", None)
        if parser is None:
            parser = self.local.parser = simdjson.Parser(max_capacity=BUFFERED_JSON_MAX)
        top = parser.parse(head)
        doc = _members(top)
        inputs = doc.pop("inputs", None)
        if not isinstance(inputs, simdjson.Array):
            raise NotCommon
        items, arrays = [], 1  # the '[' the document holds outside strings: `inputs`, and below
        for value in inputs:
            item = _members(value)
            data = item.pop("data", None)
            kind = BUFFERED.get(item.get("datatype"))  # type: ignore[arg-type]
            if kind is None or not isinstance(data, simdjson.Array) or len(data) <= SMALL_ARRAY:
                raise NotCommon
            numbers = np.frombuffer(data.as_buffer(of_type=kind),  # type: ignore[arg-type]
                                    dtype=np.float64 if kind == "d" else np.int64)
            converted = {key: _python(v) for key, v in item.items()}
            arrays += 1 + sum(map(_lists, converted.values()))
            converted["data"] = numbers
            items.append(converted)
        rest = {key: _python(v) for key, v in doc.items()}
        if brackets != arrays + sum(map(_lists, rest.values())):
            raise NotCommon  # a `data` held a list (as_buffer flattens it), or a string held a '['
        rest["inputs"] = items
        return rest


def _brackets(head: bytes, most: int = 64) -> int | None:
    """How many '[' `head` holds; None when one follows another right away (nested `data`, as numpy's tolist()
    and json.dumps write it) or there are more than `most` (no flat request of a few inputs has): such a
    document is refused before it is parsed, not parsed twice. memchr per '[': `b"[[" in head` or
    `head.count(b"[")` take 20-50 us for 60 KB."""
    count, at = 0, head.find(b"[")
    while at >= 0:
        if count == most or head[at + 1:at + 2] == b"[":
            return None
        count += 1
        at = head.find(b"[", at + 1)
    return count


def _members(value: Any) -> dict[str, Any]:
    """An object's members; NotCommon for anything else, or for a duplicate key (simdjson's lookup would take
    the first, orjson takes the last)."""
    if not isinstance(value, simdjson.Object):
        raise NotCommon
    keys = list(value.keys())
    if len(set(keys)) != len(keys):
        raise NotCommon
    return {key: value[key] for key in keys}  # lazily: an array is read only when asked for


def _python(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _lists(value: Any) -> int:
    """How many lists `value` holds, itself included."""
    if isinstance(value, list):
        return 1 + sum(map(_lists, value))
    if isinstance(value, dict):
        return sum(map(_lists, value.values()))
    return 0


READER = JsonReader()


def load_json(head: bytes) -> Any:
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise BadRequest("malformed JSON: nested too deeply") from exc
        raise BadRequest(f"malformed JSON: {exc}") from exc


def parse_request(body: bytes, header_length: int | None, inputs: dict[str, TensorMeta],
                  max_elements: int) -> InferRequest:
    """Parses a JSON (or binary-extension) inference request into numpy arrays; BadRequest on any flaw."""
    if header_length is not None and header_length > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {header_length} exceeds the body ({len(body)} bytes)")
    head, tail = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    doc = READER.load(head)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("the request must be an object with a non-empty `inputs` list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"inputs[{i}].name must be a string")
        datatype, shape, count = check_input(i, name, item.get("datatype"), item.get("shape"), arrays, inputs,
                                             max_elements)
        params = item.get("parameters")
        size = None if params is None else _parameters(item, f"inputs[{i}]").get("binary_data_size")
        if size is not None:
            dtype = DTYPES[datatype]
            if datatype == "BYTES":
                raise BadRequest(f"inputs[{i}]: binary BYTES tensors are not supported; send them as JSON strings")
            if isinstance(size, bool) or not isinstance(size, int) or size != count * dtype.itemsize \
                    or offset + size > len(tail):
                raise BadRequest(f"inputs[{i}].parameters.binary_data_size must be {count * dtype.itemsize} bytes "
                                 "and lie inside the body")
            arrays[name] = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
            continue
        if "data" not in item:
            raise BadRequest(f"inputs[{i}] needs `data` or parameters.binary_data_size")
        arrays[name] = data_array(item["data"], DTYPES[datatype], shape, f"inputs[{i}].data", datatype)
    check_complete(arrays, inputs)
    wanted, binary = (None, set()) if "outputs" not in doc and "parameters" not in doc else _outputs(doc)
    return InferRequest(request_id, arrays, wanted, binary)


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}.parameters must be an object")
    return params


def data_array(data: Any, dtype: np.dtype[Any], shape: list[int], where: str, datatype: str) -> np.ndarray:
    """JSON `data` (flat, or nested exactly as `shape`) as an array of `dtype`; numbers are converted by
    numpy in one call, then checked as whole arrays (kind, range, integrality), never element by element."""
    count = math.prod(shape)
    if isinstance(data, np.ndarray):  # JsonReader's numbers of a flat list: from here on checked as the list's
        raw = data
    else:
        if not isinstance(data, list):
            raise BadRequest(f"{where} must be a list of {datatype} values")
        if datatype == "BYTES":
            values = _flatten(data, where, count)
            if len(values) != count:
                raise BadRequest(f"{where} has {len(values)} elements; shape {shape} needs {count}")
            if not all(isinstance(v, str) for v in values):
                raise BadRequest(f"{where} must hold strings for BYTES")
            return np.asarray(values, dtype=object).reshape(shape)
        if len(data) > count and count:  # cheap early refusal before numpy copies anything
            raise BadRequest(f"{where} has {len(data)} elements; shape {shape} needs {count}")
        try:
            raw = np.array(data)
        except ValueError as exc:  # ragged nesting, or deeper than numpy's dimension limit
            raise BadRequest(f"{where} is nested unevenly; send it flat or nested as shape {shape}") from exc
        if raw.dtype.kind not in "biuf":
            raise BadRequest(f"{where} does not hold {datatype} values: found a string, object, null "
                             "or an integer wider than 64 bits")
    if raw.size != count:
        raise BadRequest(f"{where} has {raw.size} elements; shape {shape} needs {count}")
    if raw.ndim > 1 and list(raw.shape) != shape:
        raise BadRequest(f"{where} is nested as {list(raw.shape)}; send it flat or nested as shape {shape}")
    _check_range(raw, dtype, where, datatype)
    return raw.astype(dtype, copy=False).reshape(shape)


def _check_range(raw: np.ndarray, dtype: np.dtype[Any], where: str, datatype: str) -> None:
    if raw.size == 0 or raw.dtype.kind == "b":
        return
    if raw.size <= SMALL_ARRAY:  # two numpy reductions cost more than a list of a few numbers
        flat = raw.ravel().tolist()
        low, high = min(flat), max(flat)
    else:
        low, high = raw.min(), raw.max()
    if dtype.kind == "b":
        if not ((raw == 0) | (raw == 1)).all():
            raise BadRequest(f"{where} does not hold {datatype} values: only true, false, 0 and 1 are booleans")
    elif dtype.kind == "f":
        top = FLOAT_MAX[dtype]
        if float(low) < -top or float(high) > top:
            raise BadRequest(f"{where} does not hold {datatype} values: a value is beyond {datatype}'s range")
    else:
        if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and (np.trunc(raw) == raw).all()):
            raise BadRequest(f"{where} does not hold {datatype} values: found a fraction")
        info = INT_RANGE[dtype]
        if int(low) < info.min or int(high) > info.max:
            raise BadRequest(f"{where} does not hold {datatype} values: a value is outside "
                             f"[{info.min}, {info.max}]")


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.parameters.{key} must be true or false")
    return value


def _outputs(doc: dict[str, Any]) -> tuple[list[str] | None, set[str]]:
    raw = doc.get("outputs")
    binary_all = _flag(_parameters(doc, "request"), "binary_data_output", "request")
    if raw is None:
        return None, {"*"} if binary_all else set()
    if not isinstance(raw, list):
        raise BadRequest("outputs must be a list of objects with a string `name`")
    binary: set[str] = set()
    names: list[str] = []
    for i, out in enumerate(raw):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a string `name`")
        if out["name"] in names:
            raise BadRequest(f"outputs[{i}] names output {out['name']!r} twice")
        names.append(out["name"])
        if ("parameters" in out and _flag(_parameters(out, f"outputs[{i}]"), "binary_data", f"outputs[{i}]")) \
                or binary_all:  # its parameters are checked even when the request asks for all outputs binary
            binary.add(out["name"])
    return names, binary


def _as_list(value: Any) -> Any:
    """orjson's fallback for arrays it cannot write itself (non-contiguous, or an unusual dtype)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_response(name: str, version: str, request_id: str | None, outputs: dict[str, np.ndarray],
                    binary: set[str]) -> tuple[bytes, int | None]:
    """JSON body, or JSON header + binary tensors; returns (body, header length or None). Numeric arrays
    go to orjson as they are (written in C, no tolist())."""
    items, blobs = tensor_items(outputs, binary)
    doc: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": items}
    if request_id is not None:
        doc["id"] = request_id
    head = dumps(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def dumps(doc: dict[str, Any]) -> bytes:
    """JSON with numpy arrays written by orjson itself."""
    return orjson.dumps(doc, default=_as_list, option=orjson.OPT_SERIALIZE_NUMPY)


def tensor_items(arrays: dict[str, np.ndarray], binary: set[str]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The v2 JSON items of named tensors; those named in `binary` ("*": all) as separate blobs."""
    items, blobs = [], []
    for out_name, array in arrays.items():
        item: dict[str, Any] = {"name": out_name, "shape": list(array.shape),
                                "datatype": DATATYPE.get(array.dtype, "BYTES")}
        if array.dtype.kind == "O":  # BYTES: strings in JSON only
            item["datatype"] = "BYTES"
            item["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        elif out_name in binary or "*" in binary:
            blob = np.ascontiguousarray(array).tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = np.ascontiguousarray(array).reshape(-1)
        items.append(item)
    return items, blobs
