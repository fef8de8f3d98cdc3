"""/openapi.json and /docs: public, valid OpenAPI 3, every operation documented with examples.

Swagger UI must load with no internet: its assets come from drf-spectacular-sidecar, served
under /static/ like every other static file.
"""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

API_OPERATIONS = {
    ("/messages", "post"): "scheduleMessage",
    ("/messages", "get"): "listMessages",
    ("/messages/{id}", "get"): "getMessage",
    ("/messages/{id}", "patch"): "editMessage",
    ("/messages/cancel", "post"): "cancelMessages",
    ("/messages/batch", "post"): "scheduleMessages",
    ("/messages/{id}", "delete"): "cancelMessage",
    ("/messages/{id}/retry", "post"): "retryMessage",
    ("/health", "get"): "health",
    ("/livez", "get"): "liveness",
    ("/readyz", "get"): "readiness",
    ("/metrics", "get"): "metrics",
}
PUBLIC_OPERATIONS = {("/health", "get"), ("/livez", "get"), ("/readyz", "get")}


@pytest.fixture
def schema(anonymous_api) -> dict:
    response = anonymous_api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict) -> dict[tuple[str, str], dict]:
    return {(path, method): operation for path, item in schema["paths"].items() for method, operation in item.items()}


def example_values(operation: dict, status: str) -> list:
    examples = operation["responses"][status]["content"]["application/json"]["examples"]
    return [example["value"] for example in examples.values()]


def test_schema_is_served_as_json_without_a_token(anonymous_api):
    response = anonymous_api.get("/openapi.json")

    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    assert response.json()["openapi"].startswith("3.")
    assert response.json()["info"]["title"] == "Webhook Scheduler API"


def test_schema_and_docs_ignore_a_wrong_token(anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Bearer wrong-token")

    assert anonymous_api.get("/openapi.json").status_code == 200
    assert anonymous_api.get("/docs").status_code == 200


@pytest.mark.parametrize("path", ["/openapi.json/", "/docs/"])
def test_slashed_docs_paths_answer_directly(anonymous_api, path):
    assert anonymous_api.get(path).status_code == 200


def test_served_schema_is_valid_openapi_3(schema):
    validate_schema(schema)


def test_schema_generates_with_no_warnings_and_validates(tmp_path):
    # Warnings are remembered for the whole process: start from none.
    GENERATOR_STATS.reset()
    target = tmp_path / "openapi.json"

    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(target))

    assert not GENERATOR_STATS
    assert json.loads(target.read_text())["paths"]


def test_every_operation_of_the_api_is_listed_with_a_readable_id(schema):
    documented = {key: operation["operationId"] for key, operation in operations(schema).items()}

    assert documented == API_OPERATIONS


def test_every_operation_but_health_requires_the_bearer_token(schema):
    assert schema["components"]["securitySchemes"]["BearerAuth"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    for key, operation in operations(schema).items():
        if key in PUBLIC_OPERATIONS:
            assert operation.get("security", []) == [], key
            assert "429" in operation["responses"], key  # API_PUBLIC_RATE_LIMIT
        else:
            assert operation["security"] == [{"BearerAuth": []}], key
            assert {"401", "429"} <= set(operation["responses"]), key


def test_message_id_path_parameter_carries_its_pattern(schema):
    for key, operation in operations(schema).items():
        if "{id}" in key[0]:
            [parameter] = [p for p in operation["parameters"] if p["in"] == "path"]
            assert parameter["name"] == "id"
            assert parameter["required"] is True
            assert parameter["schema"]["pattern"] == "^[A-Za-z0-9\\-_.:@+=~]{1,200}$"


def test_every_json_response_has_an_example(schema):
    for key, operation in operations(schema).items():
        for status, response in operation["responses"].items():
            for content in response["content"].values():
                assert content.get("examples"), (key, status)


def test_schedule_examples_are_what_the_api_really_answers(schema, api):
    # Given the documented request and answers of POST /messages
    operation = operations(schema)[("/messages", "post")]
    request_example = operation["requestBody"]["content"]["application/json"]["examples"]["Contract"]["value"]
    [scheduled] = example_values(operation, "200")
    [invalid] = example_values(operation, "400")

    # When the example request is sent as documented, and once without an offset
    accepted = api.post("/messages", request_example)
    refused = api.post("/messages", {**request_example, "id": "other", "scheduleTo": "2026-04-15T02:41:45"})

    # Then the API answers exactly the documented examples
    assert accepted.status_code == 200
    assert accepted.json() == scheduled
    assert refused.status_code == 400
    assert refused.json() == invalid
    assert set(invalid) == {"detail", "errors"}


def test_health_documents_healthy_and_unhealthy_answers(schema):
    operation = operations(schema)[("/health", "get")]

    assert {"status": "healthy"}.items() <= example_values(operation, "200")[0].items()
    assert {"status": "unhealthy"}.items() <= example_values(operation, "503")[0].items()


def test_probe_examples_are_what_the_probes_really_answer(schema, anonymous_api):
    liveness = operations(schema)[("/livez", "get")]
    readiness = operations(schema)[("/readyz", "get")]

    assert anonymous_api.get("/livez").json() == example_values(liveness, "200")[0]
    assert anonymous_api.get("/readyz").json() == example_values(readiness, "200")[0]
    assert {"status": "unready"}.items() <= example_values(readiness, "503")[0].items()


def test_docs_page_loads_swagger_ui_from_local_static_files(anonymous_api):
    # Given the docs page
    response = anonymous_api.get("/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()

    # Then every asset it loads is one of ours, served under /static/
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert not [asset for asset in assets if not asset.startswith("/static/")]
    assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
    }
    assert json.dumps("/openapi.json") in html

    # And each of them is there
    for asset in assets:
        static = anonymous_api.get(asset)
        assert static.status_code == 200, asset
        assert b"".join(static.streaming_content), asset
        static.close()
