"""The API: pydantic models of ModelVersion and ModelDeployment, the source the CRDs are generated from."""

from onnx_operator.api.base import API_VERSION, GROUP, VERSION
from onnx_operator.api.conditions import Condition, get_condition, set_condition
from onnx_operator.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from onnx_operator.api.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus, Signature
from onnx_operator.api.parse import InvalidSpec, parse_model_deployment, parse_model_version

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "Condition", "InvalidSpec", "ModelDeployment", "ModelDeploymentSpec",
    "ModelDeploymentStatus", "ModelVersion", "ModelVersionSpec", "ModelVersionStatus", "Signature",
    "get_condition", "parse_model_deployment", "parse_model_version", "set_condition",
]
