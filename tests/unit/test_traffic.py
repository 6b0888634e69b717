from onnx_operator.api import parse_model_deployment
from onnx_operator.desired.traffic import desired_role_service, weighted_rules

ROUTE = {"spec": {"parentRefs": [{"name": "gw"}], "rules": [
    {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}], "backendRefs": [{"name": "web", "port": 80}]},
    {"filters": [{"type": "RequestHeaderModifier"}]},
]}}


def test_every_rule_gets_stable_and_canary_at_the_given_weights() -> None:
    rules = weighted_rules(ROUTE, "web", 25)
    for rule in rules:
        assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [("web-stable", 75), ("web-canary", 25)]
    assert rules[0]["matches"] == ROUTE["spec"]["rules"][0]["matches"]
    assert rules[1]["filters"] == [{"type": "RequestHeaderModifier"}]
    assert ROUTE["spec"]["rules"][0]["backendRefs"] == [{"name": "web", "port": 80}], "the input is not modified"


def test_role_service_selects_one_version() -> None:
    md = parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
                                 "spec": {"modelVersion": "v2", "traffic": {"httpRoute": {"name": "r"}}}})
    svc = desired_role_service(md, "canary", "v2")
    assert svc["metadata"]["name"] == "web-canary"
    assert svc["spec"]["selector"] == {"serving.onnx-operator.io/deployment": "web",
                                       "serving.onnx-operator.io/version": "v2"}
