"""schemathesis against the server's own OpenAPI document: no generated request gets a 5xx."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from localcluster.models import make_model
from tests.runtime.conftest import ServerProcess, model_dir


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("contract"), make_model()), "--max-body-bytes", "65536")
    os.environ["ONNX_SERVER_CONTRACT_URL"] = srv.url
    yield srv
    srv.stop()


def _schema() -> schemathesis.schemas.BaseSchema:
    from onnx_server.openapi import openapi_document

    return schemathesis.openapi.from_dict(json.loads(json.dumps(openapi_document("linear", "1.0.0"))))


schema = _schema()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_server_errors(case: schemathesis.Case, contract_server: ServerProcess) -> None:
    response = case.call(base_url=contract_server.url, timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert "error" in response.json()
