from pathlib import Path

from onnx_operator.api.crdgen import generate_crds, main, render

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_api_models() -> None:
    assert main(["--check", str(CRDS)]) == 0, "crds/ is stale: run `make crds`"


def test_check_fails_when_a_crd_file_differs(tmp_path: Path) -> None:
    for name, crd in generate_crds().items():
        (tmp_path / name).write_text(render(crd).replace("minimum: 0", "minimum: 1", 1))
    assert main(["--check", str(tmp_path)]) == 1


def test_schemas_are_structural_without_refs_or_nullable_unions() -> None:
    text = "".join(render(c) for c in generate_crds().values())
    assert "$ref" not in text and "anyOf" not in text and "null" not in text


def test_model_deployment_has_scale_subresource_and_printer_columns() -> None:
    crd = generate_crds()["serving.onnx-operator.io_modeldeployments.yaml"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Desired", "Serving", "Ready", "Phase", "Age"]
    assert crd["spec"]["names"]["categories"] == ["models"]


def test_docs_field_reference_matches_the_api_models() -> None:
    from onnx_operator.api.reference import main as reference

    assert reference(["--check", str(CRDS.parent / "docs" / "reference.md")]) == 0, "run `make docs`"


def test_field_reference_links_kubernetes_types_instead_of_expanding_them() -> None:
    from onnx_operator.api.reference import POD_SCHEDULING, render_reference

    text = render_reference()
    for field in ("spec.nodeSelector", "spec.tolerations", "spec.affinity"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{field}` |"))
        assert f"]({POD_SCHEDULING})" in row, row
    assert "spec.affinity.nodeAffinity" not in text and "spec.tolerations[]." not in text
