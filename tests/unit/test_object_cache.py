from typing import Any

from onnx_operator.kube.cache import ObjectCache

DEP = ("apps/v1", "Deployment")


def deployment(name: str, rv: str, namespace: str = "ns", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "labels": labels,
                         "managedFields": [{"manager": "x"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "1"}},
            "spec": {"replicas": 1}}


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "20"))

    assert not cache.observe(deployment("a", "19"))

    assert cache.get(*DEP, "ns", "a")["metadata"]["resourceVersion"] == "20"  # type: ignore[index]


def test_resource_versions_compare_as_numbers_not_strings() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "9"))

    assert cache.observe(deployment("a", "10"))


def test_stored_copies_leave_out_managed_fields_and_last_applied() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "1"))

    meta = cache.get(*DEP, "ns", "a")["metadata"]  # type: ignore[index]
    assert "managedFields" not in meta
    assert meta["annotations"] == {"keep": "1"}


def test_list_selects_by_namespace_and_every_label() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "1", app="x", tier="web"))
    cache.observe(deployment("b", "1", app="x"))
    cache.observe(deployment("c", "1", namespace="other", app="x", tier="web"))

    assert [d["metadata"]["name"] for d in cache.list(*DEP, "ns", {"app": "x", "tier": "web"})] == ["a"]


def test_forgotten_objects_are_gone_and_uncovered_kinds_are_not_stored() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "1"))
    cache.forget(*DEP, "ns", "a")

    assert cache.get(*DEP, "ns", "a") is None
    assert not cache.observe({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "1"}})
    assert not cache.covers("v1", "Pod")


def test_a_list_by_the_index_label_follows_label_changes_and_deletions() -> None:
    cache = ObjectCache([DEP], index_label="owner")
    cache.observe(deployment("a", "1", owner="x", tier="web"))
    cache.observe(deployment("b", "1", owner="x"))
    cache.observe(deployment("a", "2", owner="y", tier="web"))
    cache.forget(*DEP, "ns", "b")

    assert cache.list(*DEP, "ns", {"owner": "x"}) == []
    assert [d["metadata"]["name"] for d in cache.list(*DEP, "ns", {"owner": "y", "tier": "web"})] == ["a"]


def test_reads_return_copies_the_caller_may_change() -> None:
    cache = ObjectCache([DEP])
    cache.observe(deployment("a", "1"))

    cache.get(*DEP, "ns", "a")["spec"]["replicas"] = 9  # type: ignore[index]

    assert cache.get(*DEP, "ns", "a")["spec"]["replicas"] == 1  # type: ignore[index]


def test_stored_pods_keep_metadata_and_status_but_not_their_spec() -> None:
    cache = ObjectCache([("v1", "Pod")])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "1"},
           "spec": {"containers": [{"name": "server"}]}, "status": {"phase": "Pending"}}

    cache.observe(pod)

    assert cache.get("v1", "Pod", "ns", "p") == {k: v for k, v in pod.items() if k != "spec"}
    assert pod["spec"] == {"containers": [{"name": "server"}]}  # the caller's object is left alone
