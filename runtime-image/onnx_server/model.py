"""Loading a model with onnxruntime and reading its signature (the only module importing it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnx_server.errors import BadRequest, InvalidModel, UnsafePath
from onnx_server.protocol import NUMPY

# onnxruntime type strings -> Open Inference Protocol v2 data types
DTYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}
V2_DTYPES = set(NUMPY)


def check_external_data(model_path: Path) -> None:
    """Refuses external-data locations that are absolute, contain '..' or resolve outside the folder."""
    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise InvalidModel(f"{model_path.name} is not a valid ONNX file: {exc}") from exc
    root = model_path.parent.resolve()
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            loc = entry.value
            target = (root / loc).resolve()
            if Path(loc).is_absolute() or ".." in Path(loc).parts or not target.is_relative_to(root):
                raise UnsafePath(f"external data {loc!r} of tensor {tensor.name!r} points outside the model folder")
            if (root / loc).is_symlink():
                raise UnsafePath(f"external data {loc!r} of tensor {tensor.name!r} is a symlink")


def _shape(dims: list[Any]) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in dims]


def load_session(model_path: Path, threads: int | None = None, prepack: bool = True) -> ort.InferenceSession:
    """External data stays memory-mapped from the model's folder unless pre-packing copies the weights."""
    check_external_data(model_path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidModel(f"onnxruntime cannot load {model_path.name}: {exc}") from exc


def signature(session: ort.InferenceSession) -> dict[str, list[dict[str, Any]]]:
    def describe(args: list[Any]) -> list[dict[str, Any]]:
        return [{"name": a.name, "dtype": DTYPES.get(a.type, a.type), "shape": _shape(list(a.shape))} for a in args]
    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


class LoadedModel:
    """A loaded session with its signature; `run` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, model_path: Path, threads: int | None = None, prepack: bool = True) -> None:
        self.session = load_session(model_path, threads, prepack)
        sig = signature(self.session)
        self.inputs: list[dict[str, Any]] = sig["inputs"]
        self.outputs: list[dict[str, Any]] = sig["outputs"]
        # sequences and maps (e.g. skl2onnx's ZipMap) have no v2 tensor form: listed in the metadata, never
        # returned; asked for by name they get a 400 that says what they are
        self.tensor_outputs = [o["name"] for o in self.outputs if o["dtype"] in V2_DTYPES]
        self.tensor_output_set = frozenset(self.tensor_outputs)
        # InferenceSession.run re-checks the feeds' names and OrtValue ownership in Python (4-5 us a call) before
        # its C++ session runs them; every feed here was already checked against the model's inputs (protocol.py)
        self._run = getattr(self.session, "_sess", self.session).run

    @property
    def batchable(self) -> bool:
        """Every input and tensor output has a dynamic first (batch) dimension."""
        tensors = self.inputs + [o for o in self.outputs if o["name"] in self.tensor_outputs]
        return all(t["shape"] and t["shape"][0] == -1 for t in tensors)

    def run(self, feeds: dict[str, Any], outputs: list[str] | None = None) -> dict[str, Any]:
        names = outputs or self.tensor_outputs
        try:
            values = self._run(names, feeds, None)
        except Exception as exc:
            raise BadRequest(f"the model rejected the input: {str(exc).splitlines()[0][:300]}") from exc
        return dict(zip(names, values, strict=True))

    def warmup_feeds(self) -> dict[str, Any]:
        """Generated inputs: dynamic dimensions become 1, values are zeros (empty strings for BYTES)."""
        feeds: dict[str, Any] = {}
        for t in self.inputs:
            shape = [1 if d == -1 else d for d in t["shape"]]
            if t["dtype"] == "BYTES":
                feeds[t["name"]] = np.full(shape, "", dtype=object)
            else:
                feeds[t["name"]] = np.zeros(shape, dtype=NUMPY.get(t["dtype"], np.float32))
        return feeds
