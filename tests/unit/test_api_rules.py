"""The API's rules: each CEL rule has a Python twin, so parsing rejects what the API server rejects."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from onnx_operator import api
from onnx_operator.api import InvalidSpec, ModelDeployment, ModelVersion, parse_model_deployment, parse_model_version
from onnx_operator.api.base import ApiModel, Rule
from onnx_operator.api.crdgen import generate_crds, render
from pydantic import BaseModel

SHA = "a" * 64


def md(name: str = "web", **spec: Any) -> ModelDeployment:
    return parse_model_deployment({"metadata": {"name": name, "namespace": "ns"},
                                   "spec": {"modelVersion": "v1", **spec}})


def mv(name: str = "v1") -> ModelVersion:
    return parse_model_version({"metadata": {"name": name, "namespace": "ns"}, "spec": {
        "model": "iris", "version": "1.0.0", "source": {"uri": "https://m.example/x.onnx", "sha256": SHA}}})


def canary(*weights: int, **extra: Any) -> dict[str, Any]:
    return {"type": "Canary", "canary": {"steps": [{"weight": w} for w in weights], **extra}}


def models_with_rules() -> list[type[ApiModel]]:
    seen: list[type[ApiModel]] = []
    todo: list[type[BaseModel]] = [ModelDeployment, ModelVersion]
    while todo:
        model = todo.pop()
        if issubclass(model, ApiModel) and model not in seen:
            seen.append(model)
            todo += [t for f in model.model_fields.values() for t in _models_in(f.annotation)]
    return [m for m in seen if m.rules]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas",
     "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas"),
    ({"strategy": {"type": "RollingUpdate", "canary": {"steps": [{"weight": 100}]}}}, "spec.strategy.canary",
     "spec.strategy.canary is only allowed when spec.strategy.type is Canary"),
    ({"strategy": {"type": "Canary"}}, "spec.strategy.canary",
     "spec.strategy.canary (with steps) is required when spec.strategy.type is Canary"),
    ({"strategy": {"type": "Canary", "canary": {"steps": [{"weight": 100}]}, "blueGreen": {}}},
     "spec.strategy.blueGreen", "spec.strategy.blueGreen is only allowed when spec.strategy.type is BlueGreen"),
    ({"strategy": {"type": "BlueGreen", "rollingUpdate": {}}}, "spec.strategy.rollingUpdate",
     "spec.strategy.rollingUpdate is only allowed when spec.strategy.type is RollingUpdate"),
    ({"strategy": canary(10, 50, 50, 100)}, "spec.strategy.canary.steps[2].weight",
     "spec.strategy.canary.steps[2].weight: weights must be strictly increasing"),
    ({"strategy": canary(10, 50)}, "spec.strategy.canary.steps[1].weight",
     "spec.strategy.canary.steps[1].weight: the last step must have weight 100"),
    ({"strategy": canary(100, analysis={"queries": [{"name": "errors", "query": "up"}]})},
     "spec.strategy.canary.analysis.queries[0].max",
     "spec.strategy.canary.analysis.queries[0].max: each query needs max, min or both"),
    ({"strategy": canary(100, analysis={"intervalSeconds": 10})}, "spec.strategy.canary.analysis.successRate",
     "spec.strategy.canary.analysis.successRate: set successRate, latencyP99Ms or queries"),
    ({"strategy": {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}}, "spec.strategy.rollingUpdate.maxSurge",
     "spec.strategy.rollingUpdate.maxSurge: maxSurge and maxUnavailable must not both be 0"),
    ({"tls": {"secretName": "web-tls", "clientAuth": "Optional"}}, "spec.tls.clientCASecretName",
     "spec.tls.clientCASecretName is required when spec.tls.clientAuth is Optional"),
])
def test_spec_breaking_a_rule_is_rejected_naming_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    assert_rejected(spec, field, message)


def assert_rejected(spec: dict[str, Any], field: str, message: str) -> None:
    """A ModelDeployment with `spec` is refused with an InvalidSpec naming `field`, its message starting so."""
    with pytest.raises(InvalidSpec) as err:
        md(**spec)

    assert err.value.field == field
    assert str(err.value).startswith(message)


def test_canary_weights_out_of_order_name_the_first_offending_step() -> None:
    with pytest.raises(InvalidSpec) as err:
        md(strategy=canary(50, 20, 100))

    assert err.value.field == "spec.strategy.canary.steps[1].weight"


@pytest.mark.parametrize("value", ["abc", "25", "-5%", -1, 1.5, True])
def test_max_surge_takes_only_a_count_or_a_percentage(value: object) -> None:
    with pytest.raises(InvalidSpec, match=r"^spec\.strategy\.rollingUpdate\.maxSurge: .* is not allowed: use a whole"):
        md(strategy={"rollingUpdate": {"maxSurge": value}})


def test_zero_surge_is_allowed_when_pods_may_become_unavailable() -> None:
    rolling = md(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}).spec.strategy.rolling_update

    assert rolling is not None and (rolling.max_surge, rolling.max_unavailable) == (0, "25%")


def test_resource_quantity_must_be_a_kubernetes_quantity() -> None:
    with pytest.raises(InvalidSpec) as err:
        md(resources={"limits": {"memory": "lots"}})

    assert err.value.field == "spec.resources.limits.memory"


@pytest.mark.parametrize("name", ["1web", "Web", "web-", "w" * 64])
def test_model_deployment_name_must_be_a_dns_label_for_its_service(name: str) -> None:
    with pytest.raises(InvalidSpec, match=r"metadata\.name must be a DNS-1035 label") as err:
        md(name=name)

    assert err.value.field == "metadata.name"


def test_model_version_name_longer_than_a_label_value_is_rejected() -> None:
    with pytest.raises(InvalidSpec, match=r"metadata\.name must be at most 63 characters"):
        mv("m" * 64)


def test_model_version_reference_longer_than_a_label_value_is_rejected() -> None:
    with pytest.raises(InvalidSpec) as err:
        md(modelVersion="v" * 64)

    assert err.value.field == "spec.modelVersion"


def test_every_rule_but_a_transition_rule_has_a_python_twin() -> None:
    rules = [r for m in models_with_rules() for r in m.rules]

    assert len(rules) >= 10
    assert all(r.violation is not None or "oldSelf" in r.cel for r in rules)


def test_every_rule_is_in_the_generated_crds() -> None:
    text = "".join(render(c) for c in generate_crds().values())
    schemas = [r.schema() for m in models_with_rules() for r in m.rules]

    for crd in generate_crds().values():
        assert "x-kubernetes-validations" in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert all(s["rule"].split(" ")[0] in text for s in schemas)
    assert len(schemas) == text.count("rule: ")


def test_every_rule_message_names_a_field() -> None:
    rules: list[Rule] = [r for m in models_with_rules() for r in m.rules]

    assert all(r.message.startswith(("spec.", "spec ", "metadata.")) for r in rules)


def test_status_conditions_are_a_list_keyed_by_type() -> None:
    crd = generate_crds()["serving.onnx-operator.io_modeldeployments.yaml"]
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]

    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["versions"]["x-kubernetes-list-map-keys"] == ["name"]


def test_public_api_lists_exactly_its_exported_names() -> None:
    exported = {n for n in dir(api) if not n.startswith("_") and not isinstance(getattr(api, n), type(api))}

    assert sorted(api.__all__) == sorted(exported)


def example_resources() -> list[dict[str, Any]]:
    paths = sorted((Path(__file__).resolve().parents[2] / "examples").rglob("*.yaml"))
    docs = [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]
    return [d for d in docs if d.get("kind") in ("ModelDeployment", "ModelVersion")]


@pytest.mark.parametrize("doc", example_resources(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_example_resources_satisfy_the_api(doc: dict[str, Any]) -> None:
    parse = parse_model_deployment if doc["kind"] == "ModelDeployment" else parse_model_version

    parsed = parse({**doc, "metadata": {"namespace": "ns", **doc["metadata"]}})

    assert parsed.name == doc["metadata"]["name"]


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "spec.tolerations[0].value",
     "spec.tolerations[0].value: value must be empty when operator is Exists"),
    ({"tolerations": [{"operator": "Equal", "value": "v"}]}, "spec.tolerations[0].operator",
     "spec.tolerations[0].operator: operator must be Exists when key is empty"),
    ({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]},
     "spec.tolerations[0].tolerationSeconds", "spec.tolerations[0].tolerationSeconds: tolerationSeconds is only"),
    ({"tolerations": [{"key": "k", "effect": "Sometimes"}]}, "spec.tolerations[0].effect",
     "spec.tolerations[0].effect"),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}},
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].values", "spec.affinity.nodeAffinity"),
    ({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "preference": {
        "matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["many"]}]}}]}}},
     "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference"
     ".matchExpressions[0].values", "spec.affinity.nodeAffinity"),
    ({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
        "topologyKey": "kubernetes.io/hostname"}]}}},
     "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector"
     ".matchExpressions[0].values", "spec.affinity.podAntiAffinity"),
    ({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 500, "podAffinityTerm": {"topologyKey": "zone"}}]}}},
     "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "spec.affinity"),
    ({"nodeSelector": {"type": 3}}, "spec.nodeSelector.type", "spec.nodeSelector.type"),
])
def test_bad_placement_is_rejected_naming_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    assert_rejected(spec, field, message)


def test_placement_fields_reach_the_serving_pods_as_given() -> None:
    from onnx_operator.config import load_config
    from onnx_operator.desired.serving import desired_deployment

    placement = {
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Equal", "value": "fake", "effect": "NoSchedule"},
                        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"serving.onnx-operator.io/deployment": "web"}}}}]}},
    }
    model = md(**placement)
    model.metadata["uid"] = "u"

    pod = desired_deployment(model, mv(), load_config([], {}), 2)["spec"]["template"]["spec"]

    assert {k: pod[k] for k in placement} == placement


def test_pods_without_placement_fields_carry_none() -> None:
    from onnx_operator.config import load_config
    from onnx_operator.desired.serving import desired_deployment

    model = md()
    model.metadata["uid"] = "u"

    pod = desired_deployment(model, mv(), load_config([], {}), 2)["spec"]["template"]["spec"]

    assert not {"nodeSelector", "tolerations", "affinity"} & set(pod)


def test_signature_of_a_model_with_a_non_tensor_output_is_recorded() -> None:
    from onnx_operator.desired.verification import parse_verify_result

    message = ('{"digest": "sha256:' + SHA + '", "sizeBytes": 670, "signature": {"inputs": [{"name": "float_input", '
               '"dtype": "FP32", "shape": [3, 2]}], "outputs": [{"name": "label", "dtype": "INT64", "shape": [3]}, '
               '{"name": "probabilities", "dtype": "seq(map(int64,tensor(float)))", "shape": []}]}}')

    result = parse_verify_result(message, 0)

    assert result.ok, result.message
    assert result.signature is not None
    assert result.signature.outputs[1].dtype == "seq(map(int64,tensor(float)))"


@pytest.mark.parametrize("dtype", ["FLOAT", "tensor(float)", "seq(", "int64"])
def test_declared_signature_dtype_must_be_a_v2_or_onnx_sequence_type(dtype: str) -> None:
    body = {"metadata": {"name": "v1", "namespace": "ns"}, "spec": {
        "model": "iris", "version": "1.0.0", "source": {"uri": "https://m.example/x.onnx", "sha256": SHA},
        "signature": {"inputs": [{"name": "x", "dtype": dtype, "shape": [-1, 4]}]}}}

    with pytest.raises(InvalidSpec) as err:
        parse_model_version(body)

    assert err.value.field == "spec.signature.inputs[0].dtype"
