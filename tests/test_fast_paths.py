"""The shortcuts POST /messages takes for speed give the same results as the general way."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import Http404
from django.utils import timezone
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from messages.api.negotiation import ContentNegotiation
from messages.api.serializers import ListMessagesSerializer, ScheduleMessageSerializer
from messages.confidential import open_headers
from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus

pytestmark = pytest.mark.django_db

NEW_MESSAGE = {
    "owner_id": API_TOKEN_KEY_ID,
    "schedule_to": datetime(2099, 1, 1, 12, 30, 0, 123456, tzinfo=UTC),
    "due_at": datetime(2099, 1, 1, 12, 30, 0, 123456, tzinfo=UTC),
    "webhook_url": "https://example.com/hook?x=1",
    "payload": {"text": "grüße", "list": [1, 2.5, None, True], "nested": {"a": "b"}},
    "headers": {"X-Tenant": "acme"},
    "max_attempts": 3,
    "timeout_seconds": None,
    "created_at": datetime(2026, 4, 15, 2, 41, 45, 1000, tzinfo=UTC),
    "enqueued_at": None,
}


class ParameterisedRenderer(JSONRenderer):
    media_type = "application/json; version=2"


def stored_row(pk: int) -> dict:
    """The row as the database holds it, before any Django conversion."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Message._meta.db_table} WHERE id = %s", [pk])  # noqa: S608 - our own table name
        columns = [column[0] for column in cursor.description]
        return dict(zip(columns, cursor.fetchone(), strict=True))


def test_an_inserted_message_is_stored_exactly_as_create_stores_it():
    created = Message.objects.create(message_id="by-create", **NEW_MESSAGE)

    inserted = Message(message_id="by-insert", **NEW_MESSAGE)
    Message.objects.insert(inserted)

    assert inserted.pk is not None
    assert not inserted._state.adding
    assert inserted._state.db == "default"
    by_create, by_insert = stored_row(created.pk), stored_row(inserted.pk)
    for differing in ("id", "message_id", "delivery_id"):
        by_create.pop(differing), by_insert.pop(differing)
    # Sealed with a fresh IV each time: the same headers once opened.
    assert open_headers(by_insert.pop("headers_sealed")) == open_headers(by_create.pop("headers_sealed"))
    assert by_insert == by_create
    assert Message.objects.get(pk=inserted.pk).status == MessageStatus.SCHEDULED


def test_inserting_a_taken_id_raises_integrity_error_and_keeps_the_transaction_usable():
    Message.objects.insert(Message(message_id="taken", **NEW_MESSAGE))

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.insert(Message(message_id="taken", **NEW_MESSAGE))

    assert Message.objects.filter(message_id="taken").count() == 1


def test_schedule_serializers_share_their_bound_fields_across_instances():
    first = ScheduleMessageSerializer(data={})
    second = ScheduleMessageSerializer(data={})

    assert first.fields is second.fields
    assert first.fields["headers"].child.parent is first.fields["headers"]
    assert ScheduleMessageSerializer._declared_fields["id"].parent is None  # the declarations stay unbound


def test_a_serializer_with_shared_fields_refuses_partial_and_context():
    with pytest.raises(TypeError):
        ScheduleMessageSerializer(data={}, partial=True)
    with pytest.raises(TypeError):
        ListMessagesSerializer(data={}, context={"request": None})


def test_shared_fields_give_each_thread_its_own_answer():
    # Given many threads validating at once, half of them invalid
    bodies = [
        {"id": f"m-{number}", "scheduleTo": "2099-01-01T00:00:00Z", "webhookUrl": "https://example.com/",
         "payload": {"n": number}, "headers": {"X-N": str(number)}, "maxAttempts": number % 20 + 1}
        if number % 2 else {"id": "bad/id", "scheduleTo": "soon", "webhookUrl": "ftp://x", "payload": 1}
        for number in range(400)
    ]
    results: dict[int, dict] = {}

    def validate(numbers: range) -> None:
        for number in numbers:
            serializer = ScheduleMessageSerializer(data=bodies[number])
            serializer.is_valid()
            results[number] = serializer.validated_data or serializer.errors

    # When they all validate together
    threads = [threading.Thread(target=validate, args=(range(start, 400, 8),)) for start in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then each got the answer for its own body
    for number, result in results.items():
        if number % 2:
            assert result["payload"] == f'{{"n":{number}}}'  # the JSON text, encoded once
            assert result["headers"] == {"X-N": str(number)}
            assert result["maxAttempts"] == number % 20 + 1
        else:
            assert set(result) == {"id", "scheduleTo", "webhookUrl", "payload"}
    assert len(results) == 400


def test_inserted_created_at_keeps_its_default_when_not_given():
    before = timezone.now()
    message = Message(message_id="defaulted", **{key: value for key, value in NEW_MESSAGE.items() if key != "created_at"})
    Message.objects.insert(message)
    assert before <= Message.objects.get(pk=message.pk).created_at <= timezone.now()


@pytest.mark.parametrize(
    ("accept", "query"),
    [
        (None, ""), ("*/*", ""), ("application/json", ""), ("application/json; indent=4", ""), ("text/html", ""),
        ("", ""), ("*/*;q=0.8", ""), ("text/*, */*", ""), (None, "format=json"), (None, "format=xml"),
        ("*/*", "status=failed"), ("*/*", "format=json"),
    ],
)
@pytest.mark.parametrize("renderer_classes", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer], [ParameterisedRenderer]])
def test_content_negotiation_answers_as_drf_does(accept, query, renderer_classes):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/messages?{query}" if query else "/messages", **headers))
    renderers = [renderer_class() for renderer_class in renderer_classes]

    assert negotiated(ContentNegotiation(), request, renderers) == negotiated(DefaultContentNegotiation(), request, renderers)


def negotiated(negotiation: DefaultContentNegotiation, request: Request, renderers: list) -> object:
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except (NotAcceptable, Http404) as error:
        return type(error)
    return type(renderer), media_type
