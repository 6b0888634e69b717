from typing import Any

from onnx_operator.kube.client import existence_key


def secret(name: str, owner_uid: str, namespace: str = "ns") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": [{"uid": owner_uid}]},
            "stringData": {"token": owner_uid}}


def test_an_owner_created_again_under_the_same_name_has_its_object_checked_again() -> None:
    assert existence_key(secret("web-peer-token", "uid-1")) != existence_key(secret("web-peer-token", "uid-2"))


def test_the_key_ignores_the_content_written_once() -> None:
    again = secret("web-peer-token", "uid-1")
    again["stringData"] = {"token": "another random token"}

    assert existence_key(secret("web-peer-token", "uid-1")) == existence_key(again)


def test_the_same_name_in_another_namespace_is_another_object() -> None:
    assert existence_key(secret("t", "u")) != existence_key(secret("t", "u", namespace="other"))
