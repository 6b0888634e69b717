"""Leader election without a cluster: who may claim the Lease, the acting window, the settings, and a
follower's reconcile loop that only remembers keys until it leads."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from onnx_operator.config import ConfigError, load_config
from onnx_operator.handlers.loop import ReconcileLoop
from onnx_operator.kube.lease import LeaseRecord
from onnx_operator.leader import Leadership, claim
from prometheus_client import REGISTRY

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
EARLIER = NOW - dt.timedelta(minutes=5)


def gauge() -> float | None:
    return REGISTRY.get_sample_value("onnx_operator_leader")


def held_by(holder: str, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, 10, EARLIER, EARLIER, transitions)


def test_a_missing_lease_is_claimed_with_no_transitions() -> None:
    assert claim(None, "a", NOW, 10, expired=True) == LeaseRecord("a", 10, NOW, NOW, 0)


def test_a_valid_lease_held_by_another_is_not_claimed() -> None:
    assert claim(held_by("b"), "a", NOW, 10, expired=False) is None


def test_an_expired_lease_is_taken_over_and_counts_a_transition() -> None:
    assert claim(held_by("b"), "a", NOW, 10, expired=True) == LeaseRecord("a", 10, NOW, NOW, 4)


def test_a_released_lease_is_taken_at_once() -> None:
    assert claim(held_by(""), "a", NOW, 10, expired=False) == LeaseRecord("a", 10, NOW, NOW, 4)


def test_the_holder_renews_keeping_its_acquire_time_and_transitions() -> None:
    assert claim(held_by("a"), "a", NOW, 10, expired=True) == LeaseRecord("a", 10, EARLIER, NOW, 3)


def test_leadership_acts_only_inside_its_renewed_window() -> None:
    leadership = Leadership("a")
    assert not leadership.is_acting() and gauge() == 0

    started = leadership.renewed(time.monotonic() + 0.2)

    assert started and leadership.is_acting() and gauge() == 1
    assert not leadership.renewed(time.monotonic() + 0.2), "a renewal inside the term starts no new term"
    time.sleep(0.25)
    assert not leadership.is_acting() and leadership.expired()
    assert leadership.stop() and gauge() == 0


def test_without_election_the_single_replica_always_acts() -> None:
    leadership = Leadership.always()
    assert leadership.is_acting() and leadership.view()["leaderElection"] is False


def test_leader_election_is_on_by_default_with_client_go_like_ratios() -> None:
    config = load_config([], environ={})
    assert config.leader_elect
    assert config.leader_elect_retry_period < config.leader_elect_renew_deadline < config.leader_elect_lease_duration
    assert not load_config(["--leader-elect=false"], environ={}).leader_elect
    assert load_config(["--leader-elect"], environ={"ONNX_OPERATOR_LEADER_ELECT": "false"}).leader_elect


@pytest.mark.parametrize(("argv", "flag"), [
    (["--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "5"], "--leader-elect-renew-deadline"),
    (["--leader-elect-retry-period", "7"], "--leader-elect-retry-period"),
    (["--leader-elect-lease-duration", "0"], "--leader-elect-lease-duration"),
    (["--leader-elect", "sometimes"], "--leader-elect"),
    (["--leader-elect-resource-name", "Not_A_Name"], "--leader-elect-resource-name"),
])
def test_bad_election_settings_are_rejected_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag} /"):
        load_config(argv, environ={})


def test_a_follower_remembers_requests_and_reconciles_them_all_when_it_leads() -> None:
    leading = False
    done: list[tuple[str, str]] = []

    def reconcile(ns: str, name: str) -> None:
        done.append((ns, name))

    async def scenario() -> None:
        nonlocal leading
        loop = ReconcileLoop({"md": reconcile}, active=lambda: leading)
        await loop.request("md", "ns", "a")
        await loop.request("md", "ns", "b")
        await loop.request("md", "ns", "gone")
        loop.forget("md", "ns", "gone")
        assert done == [], "a follower reconciles nothing"

        leading = True
        loop.resume()
        for _ in range(100):
            if len(done) == 2:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert sorted(done) == [("ns", "a"), ("ns", "b")]
