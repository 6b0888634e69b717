"""The operator's own Prometheus metrics: reconciles, errors, durations, rollouts by result."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("onnx_operator_reconciles", "Reconciles by kind and result (ok, error)", ["kind", "result"])
RECONCILE_SECONDS = Histogram("onnx_operator_reconcile_duration_seconds", "Reconcile duration", ["kind"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ROLLOUTS = Counter("onnx_operator_rollouts", "Finished rollouts by strategy and result "
                   "(Succeeded, RolledBack, Aborted, Superseded)", ["strategy", "result"])
LEADER = Gauge("onnx_operator_leader", "1 while this replica holds the leader Lease and acts, else 0")


def serve_metrics(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")
