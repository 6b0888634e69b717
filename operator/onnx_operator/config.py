"""Operator settings: from command-line flags, else ONNX_OPERATOR_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

ENV_PREFIX = "ONNX_OPERATOR_"


class OperatorConfig(BaseModel):
    runtime_image: str = Field("onnx-operator/runtime:0.1.0", min_length=1,
                               description="Image of the ONNX runtime server for serving and verify pods.")
    namespaces: list[str] = Field(default_factory=list,
                                  description="Namespaces to watch; empty means cluster-wide.")
    prometheus_url: str | None = Field(None, description="Prometheus HTTP API for rollout metric gates.")
    field_manager: str = Field("onnx-operator", description="Server-side apply field manager.")
    serving_port: int = Field(8080, ge=1024, le=65535, description="Port the runtime server listens on.")
    grpc_port: int = Field(8081, ge=1024, le=65535, description="Port the runtime server serves gRPC on.")
    verify_deadline_seconds: int = Field(600, ge=30, description="How long a verification Job may run.")
    verify_backoff_limit: int = Field(2, ge=0, le=10, description="Retries of a verification Job whose "
                                      "download failed (a bad checksum or model fails at once).")
    verify_job_ttl_seconds: int = Field(3600, ge=0, description="How long a finished verification Job is kept "
                                        "(its result is already in the ModelVersion's status).")
    resync_seconds: float = Field(300, ge=5, description="Safety-net re-reconcile interval per object.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    liveness_port: int | None = Field(None, ge=1, le=65535, description="Serve kopf's /healthz here.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus /metrics here.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [ns.strip() for ns in value.split(",") if ns.strip()]
        return value


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the flag and the environment variable."""


def load_config(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> OperatorConfig:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m onnx_operator",
        description="The onnx-operator: reconciles ModelVersion and ModelDeployment resources. "
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG> "
        "(upper case, dashes as underscores).",
    )
    for name, field in OperatorConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        var = ENV_PREFIX + name.upper()
        parser.add_argument(flag, default=None, help=f"{field.description} [env {var}]")
    args = vars(parser.parse_args(argv))
    raw = {name: args[name] if args[name] is not None else env.get(ENV_PREFIX + name.upper())
           for name in OperatorConfig.model_fields}
    try:
        return OperatorConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise ConfigError(f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}: {err['msg']}") from exc
