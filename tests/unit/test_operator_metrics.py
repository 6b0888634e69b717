"""The per-ModelDeployment series the dashboard and alerts read, from a status."""

import datetime as dt

from onnx_operator.metrics import (
    forget_all_model_deployments,
    forget_model_deployment,
    record_model_deployment,
    status_series,
)
from prometheus_client import REGISTRY

CANARY = {"phase": "Progressing",
          "conditions": [{"type": "Degraded", "status": "False"}, {"type": "Ready", "status": "False"}],
          "versions": [{"name": "v1", "weight": 75}, {"name": "v2", "weight": 25}],
          "rollout": {"version": "v2", "strategy": "Canary", "stepIndex": 1, "stepCount": 3,
                      "gatesInconclusiveSince": "2026-12-04T10:00:00Z"}}
ROLLED_BACK = {"phase": "Degraded", "conditions": [{"type": "Degraded", "status": "True"}],
               "versions": [{"name": "v1", "weight": 100}], "rollout": {"blockedVersion": "v2"}}


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_running_canary_exports_its_step_weights_and_inconclusive_gates() -> None:
    series = status_series(CANARY)

    assert (series.phase, series.degraded, series.step, series.steps) == ("Progressing", False, 2, 3)
    assert series.weights == {"v1": 75, "v2": 25}
    assert series.inconclusive_since == dt.datetime(2026, 12, 4, 10, tzinfo=dt.UTC).timestamp()


def test_rolled_back_deployment_is_degraded_with_no_step_running() -> None:
    series = status_series(ROLLED_BACK)

    assert (series.phase, series.degraded, series.step, series.inconclusive_since) == ("Degraded", True, 0, None)


def test_recorded_series_follow_the_status_and_a_deleted_deployment_leaves_none() -> None:
    md = {"namespace": "ns-a", "modeldeployment": "web"}
    record_model_deployment("ns-a", "web", CANARY)
    record_model_deployment("ns-a", "web", ROLLED_BACK)

    assert value("onnx_operator_modeldeployment_phase", **md, phase="Degraded") == 1
    assert value("onnx_operator_modeldeployment_phase", **md, phase="Progressing") == 0
    assert value("onnx_operator_modeldeployment_weight_percent", **md, modelversion="v1") == 100
    assert value("onnx_operator_modeldeployment_weight_percent", **md, modelversion="v2") is None
    assert value("onnx_operator_modeldeployment_gates_inconclusive_since_timestamp_seconds", **md) is None
    assert value("onnx_operator_modeldeployment_rollbacks_total", **md) == 0

    forget_model_deployment("ns-a", "web")

    assert value("onnx_operator_modeldeployment_degraded", **md) is None
    assert value("onnx_operator_modeldeployment_weight_percent", **md, modelversion="v1") is None


def test_losing_the_lead_drops_every_deployment_series() -> None:
    record_model_deployment("ns-b", "one", CANARY)
    record_model_deployment("ns-b", "two", ROLLED_BACK)
    step = "onnx_operator_modeldeployment_rollout_step"
    assert value(step, namespace="ns-b", modeldeployment="one") == 2

    forget_all_model_deployments()

    for name in ("one", "two"):
        assert value(step, namespace="ns-b", modeldeployment=name) is None
