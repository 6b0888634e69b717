"""JsonReader: a large JSON request whose tensors are flat number lists is read by simdjson into buffers; every
other document by orjson. Whichever reads it, parse_request must give the same arrays or refuse with the same
message: each document below is parsed both ways and compared."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from onnx_server import protocol
from onnx_server.errors import BadRequest
from onnx_server.protocol import JsonReader, NotCommon, TensorMeta, load_json, parse_request

COUNT = 1500  # elements per tensor: every document below is over FAST_JSON_BYTES
META = {"x": TensorMeta("x", "FP32", [-1, COUNT]), "k": TensorMeta("k", "INT32", [-1, COUNT]),
        "h": TensorMeta("h", "FP16", [-1, COUNT]), "u": TensorMeta("u", "UINT8", [-1, COUNT]),
        "b": TensorMeta("b", "BOOL", [-1, COUNT])}
FLOATS = [(-1) ** i * i / 7 for i in range(COUNT)]
INTS = [(i % 201) - 100 for i in range(COUNT)]


def tensor(name: str, data: Any, datatype: str | None = None, shape: Any = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": [1, COUNT] if shape is None else shape,
            "datatype": datatype or META[name].datatype, "data": data, **extra}


def with_value(values: list[Any], at: int, value: Any) -> list[Any]:
    copy = list(values)
    copy[at] = value
    return copy


def doc(*tensors: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"id": "r1", **top, "inputs": list(tensors)}).encode()


# the common case: the buffered reader must take these (asserted below), and agree with orjson
COMMON = {
    "fp32": doc(tensor("x", FLOATS)),
    "fp32 integers": doc(tensor("x", INTS)),
    "fp32 mixed": doc(tensor("x", with_value(FLOATS, 5, 3))),
    "fp32 beyond range": doc(tensor("x", with_value(FLOATS, 1499, 1e39))),
    "fp32 -0.0 and extremes": doc(tensor("x", [-0.0, 1e-320, 3.4e+38, *FLOATS[3:]])),
    "fp32 too few": doc(tensor("x", FLOATS[:-1])),
    "fp32 too many": doc(tensor("x", [*FLOATS, 1.0])),
    "fp32 2**63 and 2**64-1": doc(tensor("x", [2 ** 63, 2 ** 64 - 1, *FLOATS[2:]])),
    "fp16 beyond range": doc(tensor("h", with_value(FLOATS, 0, 7e4))),
    "int32": doc(tensor("k", INTS)),
    "int32 beyond range": doc(tensor("k", with_value(INTS, 9, 2**31))),
    "uint8 negative": doc(tensor("u", [*[abs(v) for v in with_value(INTS, 700, 1)][:-1], -1])),
    "uint8": doc(tensor("u", [abs(v) for v in INTS])),
    "two inputs, data first": doc({"data": FLOATS, "name": "x", "datatype": "FP32", "shape": [1, COUNT]},
                                  tensor("k", INTS)),
    "outputs asked for": doc(tensor("x", FLOATS), outputs=[{"name": "y", "parameters": {"binary_data": True}}]),
    "shape mismatch": doc(tensor("x", FLOATS, shape=[2, COUNT // 2])),
    "parameters": doc(tensor("x", FLOATS, parameters={"tags": ["a", "b"]}), parameters={"p": [1, [2]]}),
    "wrong datatype": doc(tensor("x", FLOATS, datatype="FP64")),
    "unknown input": doc(tensor("x", FLOATS) | {"name": "nope"}),
    "id not a string": json.dumps({"id": 7, "inputs": [tensor("x", FLOATS)]}).encode(),
}
# the rest: the buffered reader must leave these to orjson, with the same outcome
OTHER = {
    "fp32 nested as the shape": doc(tensor("x", [FLOATS])),
    "fp32 nested single elements": doc(tensor("x", [[v] for v in FLOATS], shape=[COUNT, 1])),
    "fp32 nested single elements, spaced": doc(tensor("x", [[v] for v in FLOATS])).replace(b"[[", b"[ ["),
    "fp32 a list among the numbers": doc(tensor("x", with_value(FLOATS, 3, [1.5]))),
    "fp32 nested wrongly": doc(tensor("x", [[v] for v in FLOATS])),
    "fp32 ragged": doc(tensor("x", [FLOATS[:10], FLOATS[10:]])),
    "fp32 an empty list inside": doc(tensor("x", [[], *FLOATS[1:]])),
    "fp32 a string": doc(tensor("x", with_value(FLOATS, 3, "1.5"))),
    "fp32 a null": doc(tensor("x", with_value(FLOATS, 3, None))),
    "fp32 a boolean": doc(tensor("x", with_value(FLOATS, 3, True))),
    "fp32 an object": doc(tensor("x", with_value(FLOATS, 3, {"a": 1}))),
    "fp32 2**64": doc(tensor("x", with_value(FLOATS, 3, 2**64))),
    "int32 a fraction": doc(tensor("k", with_value(INTS, 3, 2.5))),
    "int32 a whole float": doc(tensor("k", with_value(INTS, 3, 2.0))),
    "int32 2**63": doc(tensor("k", with_value(INTS, 3, 2**63))),
    "bool": doc(tensor("b", [i % 2 == 0 for i in range(COUNT)])),
    "bytes": doc(tensor("x", ["a"] * COUNT, datatype="BYTES")),
    "a '[' in the id": doc(tensor("x", FLOATS), id="[1]"),
    "a '[' in a name": doc(tensor("x", FLOATS) | {"name": "x["}),
    "small data": doc(tensor("k", INTS), tensor("x", FLOATS[:64], shape=[1, 64])),
    "data not a list": doc(tensor("k", INTS), tensor("x", 5)),
    "inputs not a list": json.dumps({"inputs": {"x": FLOATS}}).encode(),
    "an input not an object": json.dumps({"inputs": [FLOATS]}).encode(),
    "top not an object": json.dumps([tensor("x", FLOATS)]).encode(),
    "duplicate top key": doc(tensor("x", FLOATS))[:-1] + b', "id": "second"}',
    "duplicate item key": doc(tensor("x", FLOATS)).replace(b'"name": "x"', b'"name": "k", "name": "x"'),
    "byte order mark": b"\xef\xbb\xbf" + doc(tensor("x", FLOATS)),
    "trailing content": doc(tensor("x", FLOATS)) + b" x",
    "malformed": doc(tensor("x", FLOATS))[:-2],
    "infinity": doc(tensor("x", FLOATS)).replace(b"0.0,", b"1e400,", 1),
    "datatype not a string": doc(tensor("x", FLOATS) | {"datatype": ["FP32"]}),
}


def outcome(body: bytes) -> tuple[Any, ...]:
    try:
        req = parse_request(body, None, META, 1 << 24)
    except BadRequest as exc:
        return ("refused", str(exc))
    return ("read", req.id, req.outputs, sorted(req.binary_outputs),
            {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in req.inputs.items()})


def general(body: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    with monkeypatch.context() as patch:
        patch.setattr(protocol.READER, "load", load_json)
        return outcome(body)


@pytest.mark.parametrize("case", sorted(COMMON))
def test_the_buffered_reader_takes_the_common_case_and_agrees_with_orjson(case: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    body = COMMON[case]
    assert len(body) >= protocol.FAST_JSON_BYTES
    read = JsonReader()._read(body)  # no NotCommon: it is taken
    assert any(isinstance(item.get("data"), np.ndarray) for item in read["inputs"])
    assert outcome(body) == general(body, monkeypatch)


@pytest.mark.parametrize("case", sorted(OTHER))
def test_any_other_document_goes_to_orjson_with_the_same_outcome(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = OTHER[case]
    assert len(body) >= protocol.FAST_JSON_BYTES
    with pytest.raises((NotCommon, ValueError, TypeError, RuntimeError, UnicodeDecodeError)):
        JsonReader()._read(body)
    assert outcome(body) == general(body, monkeypatch)


def test_a_failed_read_leaves_the_next_request_a_working_parser() -> None:
    reader = JsonReader()
    for body in (OTHER["fp32 a string"], OTHER["malformed"], COMMON["fp32"], OTHER["fp32 ragged"], COMMON["int32"]):
        with contextlib.suppress(BadRequest):
            reader.load(body)
    assert np.array_equal(reader.load(COMMON["fp32"])["inputs"][0]["data"], np.array(FLOATS))
