"""`kubectl model`: watch and steer rollouts (installed as the `kubectl-model` plugin)."""

from onnx_operator.cli.main import main

__all__ = ["main"]
