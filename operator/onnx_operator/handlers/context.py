"""What every reconcile needs: the API client, the settings, the clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from onnx_operator.config import OperatorConfig
from onnx_operator.kube import Kube


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Context:
    kube: Kube
    config: OperatorConfig


def live_status(body: dict[str, Any]) -> dict[str, Any]:
    """The status as stored, without kopf's private key."""
    return {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
