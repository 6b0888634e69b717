from hypothesis import given
from hypothesis import strategies as st
from onnx_operator.rollout.rolling import Observed, plan_handover, resolve


def test_first_rollout_creates_the_new_version_at_full_size() -> None:
    plan = plan_handover(3, "100%", 0, None, [])
    assert plan.new_replicas == 3 and plan.old_replicas == {}


def test_old_version_keeps_every_pod_until_new_ones_are_ready() -> None:
    plan = plan_handover(3, "100%", 0, Observed("v2", 3, 0), [Observed("v1", 3, 3)])
    assert plan.new_replicas == 3
    assert plan.old_replicas == {"v1": 3}
    assert not plan.complete


def test_old_version_shrinks_as_new_pods_become_ready() -> None:
    plan = plan_handover(3, "100%", 0, Observed("v2", 3, 2), [Observed("v1", 3, 3)])
    assert plan.old_replicas == {"v1": 1}


def test_max_unavailable_lets_old_pods_go_early() -> None:
    plan = plan_handover(4, "100%", 1, Observed("v2", 4, 0), [Observed("v1", 4, 4)])
    assert plan.old_replicas == {"v1": 3}


def test_small_surge_limits_the_new_version_first() -> None:
    plan = plan_handover(4, 1, 0, None, [Observed("v1", 4, 4)])
    assert plan.new_replicas == 1 and plan.old_replicas == {"v1": 4}


def test_zero_surge_and_zero_unavailable_still_progresses() -> None:
    plan = plan_handover(2, 0, 0, None, [Observed("v1", 2, 2)])
    assert plan.new_replicas >= 1


def test_old_deployments_are_deleted_once_the_new_one_is_fully_ready() -> None:
    plan = plan_handover(3, "100%", 0, Observed("v2", 3, 3), [Observed("v1", 0, 0), Observed("v0", 1, 1)])
    assert plan.delete == ("v1", "v0") and plan.old_replicas == {}


def test_not_yet_updated_new_deployment_does_not_complete_the_handover() -> None:
    plan = plan_handover(3, "100%", 0, Observed("v2", 3, 3, updated=False), [Observed("v1", 3, 3)])
    assert plan.delete == () and plan.old_replicas == {"v1": 0}


def test_old_version_never_grows() -> None:
    plan = plan_handover(5, "100%", 0, Observed("v2", 5, 0), [Observed("v1", 2, 2)])
    assert plan.old_replicas == {"v1": 2}


def test_percentages_round_like_deployments() -> None:
    assert resolve("25%", 3, round_up=True) == 1
    assert resolve("25%", 3, round_up=False) == 0
    assert resolve(2, 10, round_up=True) == 2


def simulate(replicas: int, surge: int | str, unavailable: int | str, ready_order: list[bool]) -> list[int]:
    """Runs the handover as the cluster would (old pods go at once, new pods turn Ready one at a time,
    `ready_order` says for each round whether one does); returns the ready total after every plan."""
    new, old = Observed("v2", 0, 0), Observed("v1", replicas, replicas)
    totals = []
    for becomes_ready in [*ready_order, *[True] * (2 * replicas + 2)]:
        plan = plan_handover(replicas, surge, unavailable, new, [old] if old.replicas else [])
        if plan.complete:
            return totals
        kept = plan.old_replicas.get("v1", 0)
        old = Observed("v1", kept, min(old.ready, kept))
        new = Observed("v2", plan.new_replicas, min(plan.new_replicas, new.ready + becomes_ready))
        totals.append(new.ready + old.ready)
    raise AssertionError(f"handover did not finish: new {new}, old {old}")


@given(replicas=st.integers(1, 12), surge=st.sampled_from([1, 2, "25%", "100%"]),
       unavailable=st.sampled_from([0, 1, "25%", "50%"]), ready_order=st.lists(st.booleans(), max_size=30))
def test_ready_pods_never_drop_below_replicas_minus_max_unavailable(
        replicas: int, surge: int | str, unavailable: int | str, ready_order: list[bool]) -> None:
    floor = replicas - resolve(unavailable, replicas, round_up=False)

    totals = simulate(replicas, surge, unavailable, ready_order)

    assert min(totals, default=replicas) >= floor


def test_handover_with_zero_surge_makes_room_by_giving_up_one_pod() -> None:
    plan = plan_handover(4, 0, 1, None, [Observed("v1", 4, 4)])

    assert (plan.new_replicas, plan.old_replicas) == (1, {"v1": 3})
