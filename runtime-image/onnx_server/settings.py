"""Server settings: one field per knob, each with its bound (env prefix ONNX_SERVER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ServerSettings(BaseModel):
    model_dir: Path = Field(description="Folder holding model.onnx (and any external data files).")
    model_file: str = Field("model.onnx", min_length=1, pattern=r"^[^/]", description="The model's path inside "
                            "model_dir; its external data must be in its own folder.")
    name: str = Field(min_length=1, max_length=128, description="Model name served at /v2/models/{name}.")
    version: str = Field(min_length=1, max_length=64, description="Model version reported and labelled.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    grpc_port: int | None = Field(8081, ge=0, le=65535, description="gRPC port (0 picks a free one; None = no gRPC).")
    threads: int | None = Field(None, ge=1, le=64, description="onnxruntime intra-op threads.")
    max_batch_size: int = Field(1, ge=1, le=1024, description="Rows merged into one run (1 = no batching).")
    max_delay_ms: float = Field(5, ge=0, le=10000, description="Longest a request waits for a batch.")
    prepack: bool = Field(True, description="Let onnxruntime pre-pack weights: faster runs, but a second copy "
                          "of the weights in memory (off: they stay memory-mapped from the files).")
    warmup: bool = Field(True, description="Run a generated input before reporting ready.")
    max_body_bytes: int = Field(64 << 20, ge=1024, description="Larger request bodies get 413 unread.")
    max_buffered_bytes: int | None = Field(
        None, ge=1024, description="Most request-body bytes held at once over all requests; others wait "
        "(default: twice max_body_bytes).")
    busy_wait_seconds: float = Field(30, ge=0, le=600, description="Longest wait for that budget before 503.")
    max_elements: int = Field(16 << 20, ge=1, description="Most elements in one input tensor.")
    max_output_bytes: int = Field(256 << 20, ge=1024, description="Most bytes of outputs in one response.")
    grace_seconds: float = Field(25, ge=0, le=600, description="How long SIGTERM waits for in-flight requests.")
    max_connection_age_seconds: float = Field(
        30, ge=0, le=86400, description="A REST connection older than this (+/-10%) gets `Connection: close` on "
        "its next response; a gRPC connection gets GOAWAY, its calls in flight finishing within grace_seconds. "
        "Keeps a canary's share honest for keep-alive and gRPC clients (0: never).")
    header_timeout_seconds: float = Field(10, gt=0, le=600, description="A request's line and headers must "
                                          "arrive within this of its first byte (else 408 and close).")
    body_timeout_seconds: float = Field(10, gt=0, le=3600, description="A body may take this long plus its "
                                        "length at min_body_bytes_per_second (else the connection is closed).")
    min_body_bytes_per_second: int = Field(64 * 1024, ge=1024, description="The slowest body upload honoured "
                                           "(64 KiB/s: a 512 kbit/s link).")
    idle_timeout_seconds: float = Field(75, gt=0, le=3600, description="An idle keep-alive connection is "
                                        "closed after this (longer than clients' own keep-alive expiry).")
    max_connections: int | None = Field(None, ge=16, le=1 << 20, description="Most open connections per "
                                        "protocol (default: sized from the memory limit and the descriptor "
                                        "limit). At the cap the longest-idle one is closed, else new ones get 503.")
    model_deployment: str = Field("", max_length=253, description="The ModelDeployment these pods serve: the "
                                  "`modeldeployment` label of every metric (empty outside Kubernetes).")

    @property
    def body_budget_bytes(self) -> int:
        return max(self.max_buffered_bytes or 2 * self.max_body_bytes, self.max_body_bytes)
