"""Each answer is rendered by the serializer that documents it: what the API answers has exactly
the keys /openapi.json gives its shape, and the documented examples have them too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rest_framework import serializers

from messages.api.responses import ListedMessageSerializer, MessageListSerializer
from messages.listing import list_messages
from messages.models import API_TOKEN_KEY_ID, DeliveryAttempt, MessageStatus
from tests.factories import make_message

pytestmark = pytest.mark.django_db

BODY = {"scheduleTo": "2099-04-15T02:41:45.5Z", "payload": {"a": 1}, "webhookUrl": "https://example.com/hook"}


@pytest.fixture
def schema(anonymous_api) -> dict:
    return anonymous_api.get("/openapi.json").json()


def documented_shape(schema: dict, path: str, method: str, status: int) -> dict:
    response = schema["paths"][path][method]["responses"][str(status)]
    reference = response["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]


def assert_documented(body: dict, shape: dict, where: str) -> None:
    properties, required = set(shape["properties"]), set(shape.get("required", []))
    assert set(body) <= properties, f"{where}: answered but not documented: {set(body) - properties}"
    assert required <= set(body), f"{where}: documented as required but not answered: {required - set(body)}"


def test_every_answer_has_exactly_the_documented_keys(schema, api, anonymous_api):
    # Given a pending message with a failed attempt, a failed message, and a page of two
    api.post("/messages", {**BODY, "id": "a", "headers": {"X-Key": "secret"}})
    api.post("/messages", {**BODY, "id": "b"})
    attempted = make_message(message_id="attempted", status=MessageStatus.RETRYING, attempt_count=1, last_status_code=503)
    DeliveryAttempt.objects.create(
        message=attempted, number=1, started_at=datetime.now(UTC), duration_ms=12, status_code=503, response_excerpt="busy"
    )
    make_message(message_id="gave-up", status=MessageStatus.FAILED, due_at=None, last_error="timeout")

    # When every operation answers, each way it can
    answers = [
        ("/messages", "post", api.post("/messages", {**BODY, "id": "c"})),
        ("/messages", "post", api.post("/messages", {**BODY, "id": "c"})),  # 409
        ("/messages", "post", api.post("/messages", {**BODY, "id": "d", "scheduleTo": "soon"})),  # 400
        ("/messages", "get", api.get("/messages")),
        ("/messages", "get", api.get("/messages?limit=1")),  # with `next`
        ("/messages", "get", api.get("/messages?status=failed")),
        ("/messages", "get", api.get("/messages?cursor=nonsense")),  # 400
        ("/messages", "get", anonymous_api.get("/messages")),  # 401
        ("/messages/{id}", "get", api.get("/messages/attempted")),
        ("/messages/{id}", "get", api.get("/messages/a")),
        ("/messages/{id}", "get", api.get("/messages/missing")),  # 404
        ("/messages/{id}/retry", "post", api.post("/messages/gave-up/retry", {})),
        ("/messages/{id}/retry", "post", api.post("/messages/a/retry", {})),  # 409
        ("/messages/{id}", "delete", api.delete("/messages/b")),
        ("/health", "get", anonymous_api.get("/health")),
        ("/livez", "get", anonymous_api.get("/livez")),
        ("/readyz", "get", anonymous_api.get("/readyz")),
    ]

    # Then each answer's keys are its documented shape's: none missing, none extra
    for path, method, response in answers:
        where = f"{method.upper()} {path} {response.status_code}"
        assert str(response.status_code) in schema["paths"][path][method]["responses"], where
        assert_documented(response.json(), documented_shape(schema, path, method, response.status_code), where)
        if (path, method, response.status_code) == ("/messages/{id}", "get", 200):
            attempt_shape = schema["components"]["schemas"]["Attempt"]
            for attempt in response.json()["attempts"]:
                assert_documented(attempt, attempt_shape, f"{where} attempt")


def test_every_documented_example_has_the_documented_keys(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is None:
                    continue
                shape = documented_shape(schema, path, method, int(status))
                for name, example in content["examples"].items():
                    assert_documented(example["value"], shape, f"{method.upper()} {path} {status} {name!r}")


@pytest.mark.parametrize(
    "due_at",
    [
        datetime(2099, 4, 15, 2, 41, 45, tzinfo=UTC),
        datetime(2099, 4, 15, 2, 41, 45, 500_001, tzinfo=UTC),
        datetime(2099, 4, 15, 4, 41, 45, tzinfo=timezone(timedelta(hours=2))),
        None,
    ],
)
def test_a_listed_row_written_out_is_what_its_fields_render(due_at):
    # Given a row as GET /messages reads it
    status = MessageStatus.FAILED if due_at is None else MessageStatus.SCHEDULED
    make_message(message_id="listed", status=status, due_at=due_at)
    [row] = list_messages(owner_id=API_TOKEN_KEY_ID, status=status, limit=10, cursor=None).messages

    # When the fast path and DRF's field-by-field rendering both write it
    written_out = ListedMessageSerializer().to_representation(row)
    field_by_field = serializers.Serializer.to_representation(ListedMessageSerializer(), row)

    # Then they give the same JSON: keys in the same order, values of the same JSON types
    assert json.dumps(written_out) == json.dumps(field_by_field)


def test_a_page_leaves_out_the_estimate_flag_and_cursor_unless_they_apply():
    make_message(message_id="only")
    page = list_messages(owner_id=API_TOKEN_KEY_ID, status=None, limit=10, cursor=None)

    assert set(MessageListSerializer(page).data) == {"scheduledJobs", "count"}
