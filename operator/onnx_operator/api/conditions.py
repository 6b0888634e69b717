"""Status conditions keyed by type; setting an unchanged condition is a no-op."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onnx_operator.api.base import ApiModel

# Reasons: stable CamelCase names a user (or Argo CD) can match on.
CHECKSUM_MISMATCH = "ChecksumMismatch"
FETCH_FAILED = "FetchFailed"
INVALID_MODEL = "InvalidModel"
UNSAFE_PATH = "UnsafePath"
TOO_LARGE = "TooLarge"
SIGNATURE_MISMATCH = "SignatureMismatch"
VERIFIED = "Verified"
VERIFYING = "Verifying"
VERIFICATION_FAILED = "VerificationFailed"
MODEL_VERSION_NOT_FOUND = "ModelVersionNotFound"
MODEL_VERSION_NOT_READY = "ModelVersionNotReady"
INVALID_SPEC = "InvalidSpec"
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
ROLLOUT_COMPLETE = "RolloutComplete"
REPLICAS_READY = "ReplicasReady"
REPLICAS_NOT_READY = "ReplicasNotReady"
AS_EXPECTED = "AsExpected"
INVALID_ARGUMENT = "InvalidArgument"
TLS_SECRET_NOT_FOUND = "TLSSecretNotFound"
TLS_SECRET_INVALID = "TLSSecretInvalid"


class Condition(ApiModel):
    type: str = Field(description="Condition type, e.g. Ready, Progressing, Degraded, Verified.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase reason, stable for automation.")
    message: str = Field("", description="Human-readable explanation.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="metadata.generation this reflects.")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: str,
) -> list[Condition]:
    """Returns the list with `type_` set; lastTransitionTime moves only when status changes."""
    value: Literal["True", "False"] = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        when = cond.last_transition_time if cond.status == value else now
        out.append(Condition(type=type_, status=value, reason=reason, message=message,
                             last_transition_time=when, observed_generation=observed_generation))
    if not found:
        out.append(Condition(type=type_, status=value, reason=reason, message=message,
                             last_transition_time=now, observed_generation=observed_generation))
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
