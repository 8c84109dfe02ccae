"""clients/openapi.json is the app's `/openapi.json`, and every vector's request is in it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from meterstream.api.spec import SPEC_PATH, openapi_document, render
from meterstream.config import Settings

VECTORS = Path(__file__).resolve().parents[2] / "clients" / "vectors"


def test_checked_in_openapi_is_what_the_app_serves(settings: Settings) -> None:
    assert SPEC_PATH.read_text() == render(openapi_document(settings)), (
        "clients/openapi.json is stale: run `.venv/bin/meterstream openapi` and commit it"
    )


def operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    msg = f"{method} {path} is not in clients/openapi.json"
    raise AssertionError(msg)


def vector_requests() -> list[Any]:
    out = []
    for file in sorted(VECTORS.glob("*.json")):
        for scenario in json.loads(file.read_text()).get("scenarios", []):
            for exchange in scenario["exchanges"]:
                out.append(pytest.param(exchange["request"], id=f"{file.stem}: {scenario['name']}"))
    return out


@pytest.mark.parametrize("request_", vector_requests())
def test_vector_requests_use_the_documented_routes_parameters_and_headers(
    request_: dict[str, Any],
) -> None:
    spec = json.loads(SPEC_PATH.read_text())
    op = operation(spec, request_["method"], request_["path"])
    declared = {(p["in"], p["name"].lower()) for p in op.get("parameters", [])}

    for name in request_.get("query", {}):
        assert ("query", name) in declared, f"query parameter {name} is not documented"
    for name in request_.get("headers", {}):
        if name != "content-type":
            assert ("header", name) in declared, f"header {name} is not documented"
    if request_["method"] == "POST" and request_["path"] == "/v1/events":
        assert request_["headers"]["content-type"] in op["requestBody"]["content"]
