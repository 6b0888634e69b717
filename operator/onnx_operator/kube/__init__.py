"""The only place that talks to the Kubernetes API server."""

from onnx_operator.kube.client import Kube, NotLeader
from onnx_operator.kube.drift import is_satisfied

__all__ = ["Kube", "NotLeader", "is_satisfied"]
