"""ModelInfer over gRPC with the real `tritonclient.grpc`, against any host:port (a local onnx-server, or
a ModelDeployment's Service `grpc` port on a real node)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from localcluster.harness import wait_for


def wait_grpc_ready(target: str, model: str, timeout: float = 60) -> None:
    """Waits (bounded) until `model` reports ready over gRPC at `target` ("host:port")."""
    client = grpcclient.InferenceServerClient(target)

    def ready() -> bool:
        try:
            return bool(client.is_model_ready(model))
        except grpcclient.InferenceServerException:
            return False
    try:
        wait_for(f"{model} to be ready over gRPC at {target}", ready, timeout=timeout, interval=0.2)
    finally:
        client.close()


def grpc_infer(target: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
               timeout: float = 30) -> dict[str, np.ndarray]:
    """One ModelInfer (tensors in raw_input_contents); returns the outputs by name."""
    client = grpcclient.InferenceServerClient(target)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
        result = client.infer(model, tensors, outputs=wanted, client_timeout=timeout)
        names = outputs or [o.name for o in result.get_response().outputs]
        return {n: result.as_numpy(n) for n in names}
    finally:
        client.close()
