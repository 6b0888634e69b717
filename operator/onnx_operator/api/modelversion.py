"""ModelVersion: one immutable, verified ONNX model artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onnx_operator.api.base import ApiModel, Resource, Rule, keyed_by
from onnx_operator.api.conditions import Condition

DTYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
          "BYTES", "BF16")
# tensors have a v2 type; sequences, maps and optionals (served only when asked for by name) keep their ONNX type
DTYPE_PATTERN = rf"^({'|'.join(DTYPES)}|(seq|map|optional)\(.+\))$"
Phase = Literal["Pending", "Verifying", "Ready", "Failed"]


# a relative path whose segments do not start with '.': no '..', no absolute start, no hidden files
RELATIVE_PATH = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"


class SourceFile(ApiModel):
    path: str = Field(max_length=512, pattern=RELATIVE_PATH,
                      description="Path of the file under the folder URI, e.g. model.onnx or weights/part-0.bin.")
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$", description="Hex SHA-256 of that file.")


class Source(ApiModel):
    rules = (
        Rule("has(self.sha256) != has(self.files)",
             "spec.source: set exactly one of sha256 (one file or an archive) and files (a folder URI ending in '/')",
             lambda s: "sha256" if (s.sha256 is None) == (s.files is None) else None),
        Rule("has(self.files) == self.uri.endsWith('/')",
             "spec.source.files pins a folder: use it with a uri ending in '/', and only then",
             lambda s: "files" if (s.files is not None) != s.uri.endswith("/") else None),
    )

    uri: str = Field(
        max_length=2048,
        pattern=r"^(https://|http://|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/).+$",
        description="Where the model is: https://host/path, s3://bucket/key or pvc://claim/path (http:// is "
        "accepted for in-cluster registries; the digests still apply). A .tar, .tar.gz, .tgz or .zip is "
        "extracted; a folder (s3://bucket/prefix/, pvc://claim/dir/, https://host/dir/) ends in '/' and "
        "needs files.",
    )
    sha256: str | None = Field(None, pattern=r"^[a-f0-9]{64}$",
                               description="Hex SHA-256 of the file or archive; a mismatch fails closed.")
    files: list[SourceFile] | None = Field(
        None, min_length=1, max_length=1000, json_schema_extra=keyed_by("path"),
        description="For a folder URI: every file to fetch, with its SHA-256. Only these are fetched, "
        "and each must match.")
    model_file: str = Field("model.onnx", max_length=512, pattern=RELATIVE_PATH,
                            description="The model's path among the files of an archive or folder; its "
                            "external data must sit in its own folder.")


class TensorSpec(ApiModel):
    name: str = Field(min_length=1, max_length=256, description="Tensor name in the graph.")
    dtype: str = Field(pattern=DTYPE_PATTERN, max_length=128,
                       description="Open Inference Protocol v2 data type, or for a non-tensor output (e.g. "
                       "scikit-learn's probabilities) its ONNX type such as seq(map(int64,tensor(float))).")
    shape: list[int] = Field(max_length=16, description="Dimensions; -1 marks a dynamic dimension.",
                             json_schema_extra={"items": {"type": "integer", "minimum": -1}})


class Signature(ApiModel):
    inputs: list[TensorSpec] = Field(default_factory=list, max_length=64, description="Model inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, max_length=64, description="Model outputs.")


class Batching(ApiModel):
    max_batch_size: int = Field(8, ge=1, le=1024, description="Most requests merged into one run.")
    max_delay_ms: int = Field(5, ge=0, le=10000, description="Longest a request waits for a batch.")


DEFAULT_MAX_CONNECTION_AGE_SECONDS = 30  # onnx-server's default too: README "Connection lifetime"


class RuntimeSettings(ApiModel):
    threads: int | None = Field(None, ge=1, le=64, description="onnxruntime intra-op threads.")
    batching: Batching | None = Field(
        None, description="Dynamic batching; only for models with a dynamic batch dimension.")
    warmup: bool | None = Field(None, description="Run a generated input before reporting ready (default true).")
    prepack: bool | None = Field(None, description="Let onnxruntime pre-pack weights (default true): faster runs, "
                                 "but a second copy of the weights in memory; false keeps a large model's "
                                 "external data memory-mapped.")
    grpc: bool | None = Field(
        None, description="Serve the Open Inference Protocol v2 over gRPC too (default true): the pods' `grpc` "
        "port, and on a ModelDeployment the Services' `grpc` port (appProtocol kubernetes.io/h2c).")
    max_connection_age_seconds: int | None = Field(
        None, ge=0, le=3600, description="A client connection older than this (+/-10%) is ended after its next "
        "response (REST: `Connection: close`; gRPC: GOAWAY, calls in flight finish), so keep-alive and gRPC "
        f"clients are placed anew and a canary gets its share of them (default {DEFAULT_MAX_CONNECTION_AGE_SECONDS}; "
        "0: never). A terminating pod serves 5 s plus this (+10%) before SIGTERM, so that every active client "
        "was told to reconnect.")
    header_timeout_seconds: int | None = Field(None, ge=1, le=600, description="A request's line and headers "
                                               "must arrive within this of its first byte, else 408 (default 10).")
    body_timeout_seconds: int | None = Field(None, ge=1, le=3600, description="A request body may take this "
                                             "plus its length at minBodyBytesPerSecond (default 10).")
    min_body_bytes_per_second: int | None = Field(None, ge=1024, le=1 << 30, description="The slowest body "
                                                  "upload honoured (default 65536: a 512 kbit/s link).")
    idle_timeout_seconds: int | None = Field(None, ge=1, le=3600, description="An idle client connection is "
                                             "closed after this (default 75, past clients' own keep-alive expiry).")
    max_connections: int | None = Field(None, ge=16, le=1 << 20, description="Most open client connections per "
                                        "protocol (default: sized from the memory limit and the descriptor limit). "
                                        "At the cap the longest-idle connection is closed, else a new one gets "
                                        "503 with Retry-After.")
    peer_fetch: bool | None = Field(
        None, description="New pods fetch the model's files from Ready pods of the same version (each file "
        "checked against its pinned sha256; the source when no peer answers or a peer's bytes differ), "
        "so scale-out and rescheduling need no source and no egress (default true). Pods then serve their "
        "files to pods of the same ModelDeployment on the `peer` port (token from an operator-created Secret).")


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
    digest: str | None = Field(None, description="sha256:<hex> of the verified file or archive, or of the "
                               "folder's manifest (see the README).")
    size_bytes: int | None = Field(None, description="Total size of the verified files.")
    file_count: int | None = Field(None, description="Number of verified files (1 for a single file).")
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
