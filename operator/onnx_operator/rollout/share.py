"""The split that pods really served, against the one intended.

kube-proxy balances connections, not requests, so a version's share of Ready pods is what it should get,
not what it gets: clients on keep-alive or gRPC connections stay where they landed until their
connection ends (onnx-server ends it after --max-connection-age). The operator therefore reads each
version's request rate from Prometheus, from the series of this ModelDeployment only, and says so when
the canary stays well below its share once every client had time to reconnect.
"""

from __future__ import annotations

from typing import Any

from onnx_operator.rollout.gates import WINDOW
from onnx_operator.rollout.timeutil import parse_duration, seconds_between

UNDER_SERVED = "CanaryUnderServed"  # Progressing reason while the canary answers far less than its share
LOW_FRACTION = 0.5  # below half of its intended share counts as low
LOW_INTERVALS = 3  # ... for this many gate intervals
SETTLE_AGES = 2  # connection ages after the step's pods are Ready before the share is judged


def served_rate_query(md_name: str, namespace: str) -> str:
    """Requests per second each version (the runtime's `version` label) answered for this ModelDeployment."""
    return (f'sum by (version) (rate(onnx_server_requests_total{{modeldeployment="{md_name}",'
            f'namespace=~"{namespace}|"}}[{WINDOW}]))')


def observed_shares(rates: dict[str, float], spec_versions: dict[str, str]) -> dict[str, float]:
    """Each ModelVersion's share of the requests answered, keyed by ModelVersion name, from rates keyed by
    the version the runtime labels (spec.version). Empty when nothing was answered, or when two served
    ModelVersions carry the same spec.version (their series cannot be told apart)."""
    if len(set(spec_versions.values())) != len(spec_versions):
        return {}
    total = sum(rates.get(v, 0.0) for v in spec_versions.values())
    if total <= 0:
        return {}
    return {name: round(rates.get(v, 0.0) / total, 2) for name, v in spec_versions.items()}


def track_share(state: dict[str, Any], canary: str, intended: float, shares: dict[str, float],
                ready_at: str | None, age_seconds: float, interval_seconds: float, now: str) -> str | None:
    """Records in the rollout state since when the canary has answered less than half its intended share
    (`shareLowSince`, kept across restarts) and returns why it is under-served once that has lasted
    LOW_INTERVALS gate intervals; None otherwise. Judged only once the step's pods have been Ready for
    SETTLE_AGES connection ages (every client reconnected at least once) and a full rate window."""
    observed = shares.get(canary)
    settle = SETTLE_AGES * age_seconds + parse_duration(WINDOW)
    if (observed is None or intended <= 0 or ready_at is None or seconds_between(ready_at, now) < settle
            or observed >= LOW_FRACTION * intended):
        state.pop("shareLowSince", None)
        return None
    since = str(state.setdefault("shareLowSince", now))
    if seconds_between(since, now) < LOW_INTERVALS * interval_seconds:
        return None
    hint = ("clients keep their connections: set spec.runtime.maxConnectionAgeSeconds above 0"
            if age_seconds <= 0 else
            "a proxy or gateway in front may hold its own connections to the pods (use spec.traffic.httpRoute)")
    return (f"{canary} answered {observed:.0%} of requests since {since}, less than half of its intended "
            f"{intended:.0%} (its share of Ready pods); {hint}")

