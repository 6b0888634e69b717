"""The server's own OpenAPI document (served at /v2/openapi.json; schemathesis tests against it)."""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                            "INT64", "FP16", "FP32", "FP64"]},
    "data": {"type": "array", "items": {}},
    "parameters": {"type": "object"},
}}
_JSON_OK = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}


def _get(summary: str, *extra: int) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _JSON_OK}
    for code in extra:
        responses[str(code)] = _ERROR
    return {"get": {"summary": summary, "responses": responses}}


def openapi_document(name: str, version: str) -> dict[str, Any]:
    model_params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    version_params = [*model_params, {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}]
    infer = {"post": {
        "summary": "Run inference (JSON tensors; binary extension via Inference-Header-Content-Length)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"}, "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": _TENSOR},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}}}},
        "responses": {"200": _JSON_OK, "400": _ERROR, "404": _ERROR, "413": _ERROR, "503": _ERROR},
    }}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"onnx-server: {name} {version}", "version": "2"},
        "paths": {
            "/v2": _get("Server metadata"),
            "/v2/health/live": _get("Liveness"),
            "/v2/health/ready": _get("Readiness", 503),
            "/v2/models/{name}": {**_get("Model metadata", 404, 503), "parameters": model_params},
            "/v2/models/{name}/ready": {**_get("Model readiness", 404, 503), "parameters": model_params},
            "/v2/models/{name}/infer": {**infer, "parameters": model_params},
            "/v2/models/{name}/config": {**_get("Triton model configuration", 404, 503), "parameters": model_params},
            "/v2/models/{name}/versions/{version}": {**_get("Model metadata", 404, 503), "parameters": version_params},
            "/v2/models/{name}/versions/{version}/infer": {**infer, "parameters": version_params},
        },
    }
