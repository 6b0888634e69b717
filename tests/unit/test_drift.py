from onnx_operator.kube import is_satisfied
from onnx_operator.kube.drift import merge_patch


def test_live_object_with_server_defaults_satisfies_the_desired_one() -> None:
    desired = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"x": "1"}},
               "spec": {"ports": [{"port": 80}]}}
    live = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u", "resourceVersion": "9"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "198.19.0.9"},
            "status": {"loadBalancer": {}}}
    assert is_satisfied(desired, live)


def test_changed_value_is_not_satisfied() -> None:
    assert not is_satisfied({"spec": {"replicas": 3}}, {"spec": {"replicas": 2}})


def test_missing_field_is_not_satisfied() -> None:
    assert not is_satisfied({"metadata": {"labels": {"a": "b"}}}, {"metadata": {}})


def test_list_length_change_is_not_satisfied() -> None:
    assert not is_satisfied({"args": ["a", "b"]}, {"args": ["a"]})


def test_quantities_normalised_by_the_server_compare_equal() -> None:
    assert is_satisfied({"cpu": "0.5", "memory": "1024Mi"}, {"cpu": "500m", "memory": "1Gi"})
    assert not is_satisfied({"cpu": "0.5"}, {"cpu": "1"})


def test_desired_status_is_ignored() -> None:
    assert is_satisfied({"status": {"x": 1}, "spec": {}}, {"spec": {}})


def test_merge_patch_nulls_removed_keys_and_keeps_unchanged_ones_out() -> None:
    old = {"phase": "Ready", "rollout": {"version": "v2", "stepIndex": 1, "lastAction": "p@1"}, "url": "u"}
    new = {"phase": "Ready", "rollout": {"lastAction": "p@1"}, "url": "u", "servingVersion": "v2"}
    assert merge_patch(old, new) == {"rollout": {"version": None, "stepIndex": None}, "servingVersion": "v2"}


def test_merge_patch_replaces_lists_whole() -> None:
    assert merge_patch({"conditions": [1, 2]}, {"conditions": [2]}) == {"conditions": [2]}
