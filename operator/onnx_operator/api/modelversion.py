"""ModelVersion: one immutable, verified ONNX model artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onnx_operator.api.base import ApiModel, Resource, Rule, keyed_by
from onnx_operator.api.conditions import Condition

DType = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES", "BF16"]
Phase = Literal["Pending", "Verifying", "Ready", "Failed"]


class Source(ApiModel):
    uri: str = Field(
        max_length=2048,
        pattern=r"^(https://|http://|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/).+$",
        description="Where the .onnx file is: https://host/path, s3://bucket/key or pvc://claim/path "
        "(http:// is accepted for in-cluster registries; the sha256 check still applies).",
    )
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$", description="Hex SHA-256 of the file; a mismatch fails closed.")


class TensorSpec(ApiModel):
    name: str = Field(min_length=1, max_length=256, description="Tensor name in the graph.")
    dtype: DType = Field(description="Open Inference Protocol v2 data type.")
    shape: list[int] = Field(max_length=16, description="Dimensions; -1 marks a dynamic dimension.",
                             json_schema_extra={"items": {"type": "integer", "minimum": -1}})


class Signature(ApiModel):
    inputs: list[TensorSpec] = Field(default_factory=list, max_length=64, description="Model inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, max_length=64, description="Model outputs.")


class Batching(ApiModel):
    max_batch_size: int = Field(8, ge=1, le=1024, description="Most requests merged into one run.")
    max_delay_ms: int = Field(5, ge=0, le=10000, description="Longest a request waits for a batch.")


class RuntimeSettings(ApiModel):
    threads: int | None = Field(None, ge=1, le=64, description="onnxruntime intra-op threads.")
    batching: Batching | None = Field(
        None, description="Dynamic batching; only for models with a dynamic batch dimension.")
    warmup: bool | None = Field(None, description="Run a generated input before reporting ready (default true).")
    grpc: bool | None = Field(
        None, description="Serve the Open Inference Protocol v2 over gRPC too (default true): the pods' `grpc` "
        "port, and on a ModelDeployment the Services' `grpc` port (appProtocol kubernetes.io/h2c).")


class ModelVersionSpec(ApiModel):
    rules = (Rule(
        "self == oldSelf",
        "spec is immutable: a ModelVersion is one verified artifact; create a new ModelVersion "
        "and point the ModelDeployment's spec.modelVersion at it",
        None,  # a transition rule: nothing to check on one object
    ),)

    model: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                       description="Logical model name, served as /v2/models/{model}.")
    version: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$",
                         description="Free-text version, e.g. 1.4.0.")
    description: str | None = Field(None, max_length=1024, description="What changed in this version.")
    source: Source
    signature: Signature | None = Field(None, description="Expected signature; verification fails on a mismatch.")
    runtime: RuntimeSettings | None = Field(None, description="Runtime defaults for this model.")


class ModelVersionStatus(ApiModel):
    phase: Phase | None = Field(None, description="Pending, Verifying, Ready or Failed.")
    conditions: list[Condition] = Field(default_factory=list, description="Verified.",
                                        json_schema_extra=keyed_by("type"))
    digest: str | None = Field(None, description="sha256:<hex> of the verified artifact.")
    size_bytes: int | None = Field(None, description="Size of the verified artifact.")
    signature: Signature | None = Field(None, description="Signature read from the model.")
    observed_generation: int | None = None
    verification_job: str | None = Field(None, description="Name of the Job that verified this version.")


class ModelVersion(Resource):
    rules = (Rule(
        "size(self.metadata.name) <= 63",
        "metadata.name must be at most 63 characters: it is used as a label value on serving pods",
        lambda s: "metadata.name" if len(str(s.metadata.get("name", ""))) > 63 else None,
    ),)

    spec: ModelVersionSpec
    status: ModelVersionStatus = Field(default_factory=ModelVersionStatus)
