"""Schemathesis over the patched OIP OpenAPI file (protocol.md 6 item 23 and 7).

Every operation of ``tests/openapi/open_inference_rest.patched.yaml`` gets generated requests, in
the positive mode (valid against the schema) and the negative mode (violating it); the server must
never answer 5xx, and what it answers must be declared in the schema with the declared content
type and body schema. Skipped when schemathesis is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from server_process import ServerProcess

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

SCHEMA_PATH = Path(__file__).parent.parent / "openapi" / "open_inference_rest.patched.yaml"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SUPPRESS = list(HealthCheck)


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(SCHEMA_PATH)
    return [result.ok() for result in schema.get_all_operations()]


OPERATIONS = _operations()
pytestmark = pytest.mark.usefixtures("still_serving")  # the server survives every test


def test_schema_covers_the_core_endpoints() -> None:
    paths = {(op.method.upper(), op.path) for op in OPERATIONS}
    assert ("GET", "/v2") in paths and ("GET", "/v2/") in paths
    assert ("POST", "/v2/models/{MODEL_NAME}/infer") in paths
    assert ("POST", "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer") in paths


def _cases() -> list[Any]:
    """(operation, mode) pairs; the negative mode only where there is something to violate."""
    cases = []
    for op in OPERATIONS:
        label = f"{op.method.upper()} {op.path}"
        cases.append(pytest.param(op, GenerationMode.POSITIVE, id=f"{label} positive"))
        if len(op.path_parameters) or len(op.body):
            cases.append(pytest.param(op, GenerationMode.NEGATIVE, id=f"{label} negative"))
    return cases


@pytest.mark.parametrize(("operation", "mode"), _cases())
def test_schemathesis(server: ServerProcess, operation: Any, mode: GenerationMode) -> None:
    examples = 60 if operation.method.upper() == "POST" else 10

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=SUPPRESS)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=server.url, timeout=10)
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert response.headers["content-type"] == ["application/json"]  # header -> list of values
            assert isinstance(response.json()["error"], str)

    run()
