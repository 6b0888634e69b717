"""Operator settings: from command-line flags, else ONNX_OPERATOR_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

ENV_PREFIX = "ONNX_OPERATOR_"


def _below(value: float, info: ValidationInfo, other: str, why: str) -> float:
    """`value` must be below the already-validated setting `other` (a flag name in the message)."""
    limit = info.data.get(other)
    if limit is not None and value >= limit:
        raise ValueError(f"must be below --{other.replace('_', '-')} ({limit:g}s), {why}")
    return value


class OperatorConfig(BaseModel):
    runtime_image: str = Field("onnx-operator/runtime:0.1.0", min_length=1,
                               description="Image of the ONNX runtime server for serving and verify pods.")
    namespaces: list[str] = Field(default_factory=list,
                                  description="Namespaces to watch; empty means cluster-wide.")
    prometheus_url: str | None = Field(None, description="Prometheus HTTP API for rollout metric gates.")
    field_manager: str = Field("onnx-operator", description="Server-side apply field manager.")
    serving_port: int = Field(8080, ge=1024, le=65535, description="Port the runtime server listens on.")
    grpc_port: int = Field(8081, ge=1024, le=65535, description="Port the runtime server serves gRPC on.")
    peer_port: int = Field(8090, ge=1024, le=65535, description="Port serving pods hand their verified model "
                           "files to new pods of the same ModelDeployment on (never on the user-facing Services).")
    health_port: int = Field(8082, ge=1024, le=65535, description="Plain-HTTP port of the runtime server's health "
                             "and metrics when spec.tls is set (probes and Prometheus have no client certificate).")
    verify_deadline_seconds: int = Field(600, ge=30, description="How long a verification Job may run.")
    verify_backoff_limit: int = Field(2, ge=0, le=10, description="Retries of a verification Job whose "
                                      "download failed (a bad checksum or model fails at once).")
    verify_job_ttl_seconds: int = Field(3600, ge=0, description="How long a finished verification Job is kept "
                                        "(its result is already in the ModelVersion's status).")
    workers: int = Field(16, ge=1, le=256, description="Reconciles run at once (threads; each holds one API "
                         "connection while it writes).")
    resync_seconds: float = Field(300, ge=5, description="Safety-net re-reconcile interval per object.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    liveness_port: int | None = Field(None, ge=1, le=65535, description="Serve /healthz (alive; who leads) here.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus /metrics here.")
    leader_elect: bool = Field(True, description="Elect one acting replica on a coordination.k8s.io Lease; "
                               "false runs a single replica that always acts.")
    leader_elect_lease_duration: float = Field(10, gt=0, description="Seconds a follower waits after the last "
                                               "observed renewal before it takes the Lease over.")
    leader_elect_renew_deadline: float = Field(7, gt=0, description="Seconds the leader keeps acting without a "
                                               "successful renewal; must be below the lease duration.")
    leader_elect_retry_period: float = Field(2, gt=0, description="Seconds between renewals and between a "
                                             "follower's attempts; must be below the renew deadline.")
    leader_elect_resource_name: str = Field("onnx-operator", min_length=1, max_length=253,
                                            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                            description="Name of the Lease.")
    leader_elect_resource_namespace: str | None = Field(
        None, description="Namespace of the Lease; default: the pod's namespace, else `default`.")
    leader_elect_identity: str | None = Field(
        None, description="This replica's name in the Lease; default: host name plus a random suffix.")

    @field_validator("leader_elect_renew_deadline")
    @classmethod
    def _below_lease_duration(cls, value: float, info: ValidationInfo) -> float:
        return _below(value, info, "leader_elect_lease_duration", "so the leader stops acting before its Lease "
                      "can expire")

    @field_validator("leader_elect_retry_period")
    @classmethod
    def _below_renew_deadline(cls, value: float, info: ValidationInfo) -> float:
        return _below(value, info, "leader_elect_renew_deadline", "so the leader gets several renewal attempts")

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
        help_text = f"{field.description} [env {var}]"
        if field.annotation is bool:  # `--leader-elect` alone means true, as in Kubernetes' own components
            parser.add_argument(flag, default=None, nargs="?", const="true", help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)
    args = vars(parser.parse_args(argv))
    raw = {name: args[name] if args[name] is not None else env.get(ENV_PREFIX + name.upper())
           for name in OperatorConfig.model_fields}
    try:
        return OperatorConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise ConfigError(f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}: {err['msg']}") from exc
