"""Peer fetch objects: the token Secret, the per-version peer Service, and what a serving pod gets."""

from typing import Any

from onnx_operator.desired.peer import (
    TOKEN_FILE,
    Peering,
    desired_peer_secret,
    desired_peer_service,
    peer_fetch_enabled,
    peer_secret_name,
    peer_service_wanted,
)
from onnx_operator.desired.serving import desired_deployment, desired_preview_service, desired_service

from tests.unit.test_serving_objects import CONFIG, SHA, md, mv

IP = "198.19.4.7"


def pod(dep: dict[str, Any]) -> dict[str, Any]:
    return dict(dep["spec"]["template"]["spec"])


def test_with_a_peer_ip_the_fetch_asks_the_peer_service_with_the_token_and_the_server_serves_peers() -> None:
    spec = pod(desired_deployment(md(), mv(), CONFIG, 2, Peering(IP)))
    fetch, server = spec["initContainers"][0], spec["containers"][0]

    assert fetch["args"][-4:] == ["--peer", f"http://{IP}:8090", "--peer-token-file", TOKEN_FILE]
    assert server["args"][-4:] == ["--peer-port", "8090", "--peer-token-file", TOKEN_FILE]
    assert {"name": "peer", "containerPort": 8090, "protocol": "TCP"} in server["ports"]
    token = next(v for v in spec["volumes"] if v["name"] == "peer-token")
    assert token["secret"]["secretName"] == peer_secret_name("web") == "web-peer-token"
    assert all(any(m["name"] == "peer-token" and m["readOnly"] for m in c["volumeMounts"]) for c in (fetch, server))


def test_serving_pods_keep_restricted_security_and_no_api_access_with_peer_fetch() -> None:
    spec = pod(desired_deployment(md(), mv(), CONFIG, 2, Peering(IP)))

    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    for c in [*spec["initContainers"], *spec["containers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(set(v) & {"name", "emptyDir", "secret"} == set(v) for v in spec["volumes"])  # no hostPath


def test_the_user_facing_services_never_expose_the_peer_port() -> None:
    for svc in (desired_service(md(), CONFIG), desired_preview_service(md(), "v1")):
        assert "peer" not in {p["targetPort"] for p in svc["spec"]["ports"]}


def test_the_peer_service_selects_only_the_versions_pods_on_the_peer_port() -> None:
    svc = desired_peer_service(md(), "v1", CONFIG)

    assert svc["metadata"]["name"] == "web-v1-peer"
    assert svc["spec"]["selector"] == {"serving.onnx-operator.io/deployment": "web",
                                       "serving.onnx-operator.io/version": "v1"}
    assert svc["spec"]["ports"] == [{"name": "peer", "port": 8090, "targetPort": "peer", "protocol": "TCP"}]
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"


def test_the_token_secret_belongs_to_its_model_deployment() -> None:
    secret = desired_peer_secret(md(), "t" * 64)

    assert secret["stringData"] == {"token": "t" * 64}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-md"


def test_peer_fetch_is_on_by_default_off_by_spec_and_never_for_archives() -> None:
    tar = mv(source={"uri": "https://m.example/x.tar.gz", "sha256": SHA})

    assert peer_fetch_enabled(md(), mv())
    assert not peer_fetch_enabled(md(runtime={"peerFetch": False}), mv())
    assert not peer_fetch_enabled(md(), mv(runtime={"peerFetch": False}))
    assert peer_fetch_enabled(md(runtime={"peerFetch": True}), mv(runtime={"peerFetch": False}))
    assert not peer_fetch_enabled(md(), tar)


def test_without_a_peer_service_the_pod_serves_peers_but_fetches_from_the_source_only() -> None:
    spec = pod(desired_deployment(md(replicas=1), mv(), CONFIG, 1, Peering(None)))
    fetch, server = spec["initContainers"][0], spec["containers"][0]

    assert "--peer" not in fetch["args"] and all(m["name"] != "peer-token" for m in fetch["volumeMounts"])
    assert server["args"][-4:] == ["--peer-port", "8090", "--peer-token-file", TOKEN_FILE]
    assert {"name": "peer", "containerPort": 8090, "protocol": "TCP"} in server["ports"]


def test_a_peer_service_only_when_more_than_one_pod_may_run() -> None:
    assert not peer_service_wanted(md(replicas=1))
    assert peer_service_wanted(md(replicas=2))
    assert not peer_service_wanted(md(replicas=3, autoscaling={"minReplicas": 1, "maxReplicas": 1}))
    assert peer_service_wanted(md(replicas=1, autoscaling={"minReplicas": 1, "maxReplicas": 4}))


def test_without_peering_the_pod_has_no_peer_port_or_token() -> None:
    spec = pod(desired_deployment(md(), mv(), CONFIG, 2))

    assert "--peer" not in spec["initContainers"][0]["args"]
    assert all(p["name"] != "peer" for p in spec["containers"][0]["ports"])
    assert all(v["name"] != "peer-token" for v in spec["volumes"])
