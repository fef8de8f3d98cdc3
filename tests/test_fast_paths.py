"""The shortcuts POST /messages takes for speed give the same results as the general way."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import pytest
from django.db import IntegrityError, connection, transaction
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.functional import cached_property
from rest_framework import serializers
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.utils.serializer_helpers import BindingDict

from messages.api import shared_fields
from messages.api.negotiation import ContentNegotiation
from messages.api.serializers import ListMessagesSerializer, ScheduleMessageSerializer
from messages.confidential import open_headers
from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus, _insert_statement

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
    headers = first.fields["headers"]
    assert isinstance(headers, serializers.DictField)
    assert headers.child.parent is cast(object, headers)  # the stubs type a parent as a serializer
    assert ScheduleMessageSerializer._declared_fields["id"].parent is None  # the declarations stay unbound


def test_a_serializer_with_shared_fields_refuses_partial_and_context():
    with pytest.raises(TypeError):
        ScheduleMessageSerializer(data={}, partial=True)
    with pytest.raises(TypeError):
        ListMessagesSerializer(data={}, context={"request": None})


def test_shared_fields_give_each_thread_its_own_answer():
    # Given many threads validating at once, half of them invalid
    bodies = [
        {
            "id": f"m-{number}",
            "scheduleTo": "2099-01-01T00:00:00Z",
            "webhookUrl": "https://example.com/",
            "payload": {"n": number},
            "headers": {"X-N": str(number)},
            "maxAttempts": number % 20 + 1,
        }
        if number % 2
        else {"id": "bad/id", "scheduleTo": "soon", "webhookUrl": "ftp://x", "payload": 1}
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
        (None, ""),
        ("*/*", ""),
        ("application/json", ""),
        ("application/json; indent=4", ""),
        ("text/html", ""),
        ("", ""),
        ("*/*;q=0.8", ""),
        ("text/*, */*", ""),
        (None, "format=json"),
        (None, "format=xml"),
        ("*/*", "status=failed"),
        ("*/*", "format=json"),
    ],
)
@pytest.mark.parametrize("renderer_classes", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer], [ParameterisedRenderer]])
def test_content_negotiation_answers_as_drf_does(accept, query, renderer_classes):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/messages?{query}" if query else "/messages", **headers))
    renderers = [renderer_class() for renderer_class in renderer_classes]

    assert negotiated(ContentNegotiation(), request, renderers) == negotiated(DefaultContentNegotiation(), request, renderers)


def negotiated(
    negotiation: DefaultContentNegotiation, request: Request, renderers: list, format_suffix: str | None = None
) -> object:
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers, format_suffix)
    except (NotAcceptable, Http404) as error:
        return type(error)
    return type(renderer), media_type


# --- the framework internals the shortcuts stand on: each test names the one that changed ------


class _RolledBack(Exception):
    pass


def executed_statements(write: Callable[[], object]) -> list[str]:
    """The statements `write()` executes, as the database receives them (values interpolated),
    in a transaction rolled back afterwards; the savepoints around it are left out."""
    with CaptureQueriesContext(connection) as queries:
        try:
            with transaction.atomic():
                write()
                raise _RolledBack
        except _RolledBack:
            pass
    return [query["sql"] for query in queries.captured_queries if "SAVEPOINT" not in query["sql"].upper()]


def twin_messages() -> tuple[Message, Message]:
    """Two unsaved messages with the same values, the random ones (delivery id, sealed headers) too."""
    first = Message(message_id="twin", **NEW_MESSAGE)
    second = Message(message_id="twin", **NEW_MESSAGE)
    second.delivery_id, second.headers_sealed = first.delivery_id, first.headers_sealed
    return first, second


def test_the_insert_compiled_once_is_the_statement_save_executes():
    # Given two messages with the same values, on this database (SQLite or PostgreSQL)
    assert _insert_statement(connection.alias) is not None, (
        f"Django's {connection.vendor} backend no longer has features.can_return_columns_from_insert (or "
        "InsertQuery's compiler returns through params): Message.objects.insert falls back to save() every time, "
        "so its compiled INSERT is dead code"
    )
    by_insert, by_save = twin_messages()

    # When one is inserted and the other saved as create() saves it
    inserted = executed_statements(lambda: Message.objects.insert(by_insert))
    saved = executed_statements(lambda: by_save.save(force_insert=True, using=connection.alias))

    # Then the database received the very same statement with the very same values
    assert len(saved) == 1, f"Model.save(force_insert=True) now executes {len(saved)} statements: {saved}"
    assert inserted == saved, (
        "the INSERT that messages/models.py compiles once with django.db.models.sql.InsertQuery "
        "(insert_values, SQLInsertCompiler.returning_fields, as_sql) differs from what Model.save() executes: "
        f"Django changed how it builds a model's INSERT.\ninsert(): {inserted}\nsave():   {saved}"
    )


def test_an_inserted_message_is_left_as_save_leaves_it():
    # Given two messages with the same values
    by_insert, by_save = twin_messages()

    # When one is inserted, the other saved, each rolled back afterwards
    executed_statements(lambda: Message.objects.insert(by_insert))
    executed_statements(lambda: by_save.save(force_insert=True, using=connection.alias))

    # Then both carry the same attributes, the returned columns set, and the same model state
    assert by_insert.pk is not None
    assert by_save.pk is not None
    # (Not a dict keyed by the instances: two messages with the same pk are equal models.)
    inserted, saved = (
        {key: value for key, value in vars(instance).items() if key not in ("_state", "id")} for instance in (by_insert, by_save)
    )
    assert inserted == saved, (
        "Model.save() now leaves other attributes on a new Message than Message.objects.insert writes "
        f"(Message._meta.db_returning_fields, pre_save): insert() {inserted}, save() {saved}"
    )
    inserted_state, saved_state = (
        {key: value for key, value in vars(instance._state).items() if key != "fields_cache"} for instance in (by_insert, by_save)
    )
    assert inserted_state == saved_state == {"adding": False, "db": connection.alias}, (
        "django.db.models.base.ModelState after save() is no longer just adding=False and db=alias, which "
        f"Message.objects.insert writes by hand: insert() {inserted_state}, save() {saved_state}"
    )


def test_drf_serializer_fields_is_still_a_cached_property_bound_through_binding_dict():
    """SharedFieldsSerializer replaces Serializer.fields; it assumes DRF builds it once per instance,
    from get_fields(), binding each field with BindingDict."""
    declared = inspect.getattr_static(serializers.Serializer, "fields")
    assert isinstance(declared, cached_property), (
        f"rest_framework.serializers.Serializer.fields is now {declared!r}, not a cached_property: "
        "SharedFieldsSerializer.fields (messages/api/shared_fields.py) overrides something else now"
    )
    assert inspect.getsource(declared.func).count("BindingDict(self)") == 1, (
        "rest_framework.serializers.Serializer.fields no longer builds a BindingDict(self): shared_fields.py "
        "binds its shared fields as DRF used to, not as DRF does now"
    )

    class Probe(serializers.Serializer):
        text = serializers.CharField()

    parent = Probe()
    field = serializers.CharField()
    bound = BindingDict(parent)
    bound["text"] = field
    assert (field.field_name, field.parent, field.source, bound["text"]) == ("text", parent, "text", field), (
        "rest_framework.utils.serializer_helpers.BindingDict no longer binds a field on assignment "
        "(field_name, parent, source): SharedFieldsSerializer's fields would be unbound"
    )
    assert list(bound) == ["text"]


def test_binding_a_field_sets_only_what_shared_fields_assumes():
    """Sharing a field across instances is safe because bind() sets only these, once."""
    assumed = {"field_name", "parent", "label", "source", "source_attrs"}
    for field in (
        serializers.CharField(),
        serializers.IntegerField(),
        serializers.DictField(child=serializers.CharField()),
        serializers.JSONField(),
        serializers.ChoiceField(choices=["a"]),
        serializers.RegexField("a"),
    ):
        before = dict(vars(field))
        field.bind(field_name="name", parent=serializers.Serializer())
        written = {key for key, value in vars(field).items() if key not in before or before[key] is not value}
        assert written <= assumed, (
            f"rest_framework.fields.Field.bind() on {type(field).__name__} now also sets {written - assumed}: "
            "check that SharedFieldsSerializer may still share bound fields across instances and threads"
        )


def _field_state(field: serializers.Field) -> list[dict]:
    """Each attribute of a field and of its child, containers copied, so a write in place shows."""
    state = [
        {
            key: list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
            for key, value in vars(field).items()
        }
    ]
    child = getattr(field, "child", None)
    return state + (_field_state(child) if child is not None else [])


@pytest.mark.parametrize("serializer_class", [ScheduleMessageSerializer, ListMessagesSerializer])
def test_validating_writes_nothing_to_the_shared_fields(serializer_class):
    # Given the shared fields, built afresh (earlier tests have validated with them), and the
    # blank instance they are bound to
    shared_fields._bound_fields.cache_clear()
    shared = serializer_class(data={}).fields
    blank = next(iter(shared.values())).parent
    before = {name: _field_state(field) for name, field in shared.items()}
    blank_before = dict(vars(blank))

    # When valid and invalid bodies are validated
    for body in (
        {
            "id": "m-1",
            "scheduleTo": "2099-01-01T00:00:00Z",
            "webhookUrl": "https://example.com/",
            "payload": {"n": 1},
            "headers": {"X-N": "1"},
            "maxAttempts": 3,
            "status": "failed",
            "limit": 5,
        },
        {
            "id": "bad/id",
            "scheduleTo": "soon",
            "webhookUrl": "ftp://x",
            "payload": 1,
            "headers": {"X": 1},
            "maxAttempts": 0,
            "timeoutSeconds": "x",
            "status": "nope",
            "limit": -1,
            "cursor": 5,
        },
        {},
    ):
        serializer_class(data=body).is_valid()

    # Then no shared field, nor the instance they are bound to, was written
    after = {name: _field_state(field) for name, field in shared.items()}
    changed = [name for name in shared if after[name] != before[name]]
    assert changed == [], (
        f"validating with DRF now writes to the fields {changed} of {serializer_class.__name__}: "
        "SharedFieldsSerializer shares them across requests and threads, which is no longer safe"
    )
    assert vars(blank) == blank_before, "validating with DRF now writes to a field's parent serializer"


def test_drf_validates_through_serializer_fields(monkeypatch):
    # Given the shared field for maxAttempts, watched
    shared = ScheduleMessageSerializer(data={}).fields["maxAttempts"]
    seen: list[object] = []
    run_validation = shared.run_validation

    def watched(data: object) -> object:
        seen.append(data)
        return run_validation(data)

    monkeypatch.setitem(vars(shared), "run_validation", watched)

    # When a new instance validates a body
    serializer = ScheduleMessageSerializer(
        data={
            "id": "m",
            "scheduleTo": "2099-01-01T00:00:00Z",
            "maxAttempts": 4,
            "webhookUrl": "https://example.com/",
            "payload": {},
        }
    )
    assert serializer.is_valid(), serializer.errors

    # Then DRF validated it with the shared field, read from Serializer.fields
    assert seen == [4], (
        "rest_framework.serializers.Serializer.is_valid() no longer validates through self.fields "
        "(_writable_fields): SharedFieldsSerializer.fields is bypassed and saves nothing"
    )
    assert "fields" not in vars(serializer)
    assert shared_fields._bound_fields.cache_info().currsize >= 1


def test_drf_select_renderer_still_takes_what_the_shortcut_overrides():
    drf = inspect.signature(DefaultContentNegotiation.select_renderer)
    ours = inspect.signature(ContentNegotiation.select_renderer)

    assert list(drf.parameters) == list(ours.parameters) == ["self", "request", "renderers", "format_suffix"], (
        f"rest_framework.negotiation.DefaultContentNegotiation.select_renderer is now {drf}: "
        f"messages/api/negotiation.py overrides {ours}"
    )
    assert drf.parameters["format_suffix"].default is None


@pytest.mark.parametrize("accept", [None, "*/*"])
@pytest.mark.parametrize(
    "renderer_classes", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer], [ParameterisedRenderer, JSONRenderer]]
)
def test_drf_still_answers_a_request_accepting_anything_as_the_shortcut_does(accept, renderer_classes):
    # Given a request that accepts anything, with no query string and no format suffix
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get("/messages", **headers))
    renderers = [renderer_class() for renderer_class in renderer_classes]

    # When DRF negotiates it
    drf = negotiated(DefaultContentNegotiation(), request, renderers)

    # Then it answers what the shortcut would: the first renderer with its own media type,
    # unless that type has parameters (then the shortcut leaves it to DRF)
    if ";" not in renderers[0].media_type:
        assert drf == (type(renderers[0]), renderers[0].media_type), (
            "rest_framework.negotiation.DefaultContentNegotiation.select_renderer no longer answers */* with the "
            f"first renderer and its media type ({drf}): ContentNegotiation's shortcut answers differently now"
        )
    assert negotiated(ContentNegotiation(), request, renderers) == drf


def test_a_format_suffix_is_left_to_drf():
    request = Request(APIRequestFactory().get("/messages"))
    renderers = [JSONRenderer(), BrowsableAPIRenderer()]

    for suffix in ("json", "api", "xml"):
        assert negotiated(ContentNegotiation(), request, renderers, suffix) == negotiated(
            DefaultContentNegotiation(), request, renderers, suffix
        )


@pytest.mark.django_db
def test_delete_rows_is_one_delete_of_exactly_those_rows():
    # MessageQuerySet.delete_rows rides on Django's private QuerySet._raw_delete: one DELETE, no
    # collector fetching the rows first, nothing cascaded.
    from messages.models import Message
    from tests.factories import make_message

    assert callable(getattr(Message.objects.all(), "_raw_delete", None)), "Django's QuerySet._raw_delete is gone"
    kept = make_message(message_id="kept")
    gone = [make_message(message_id=f"gone-{n}").pk for n in range(3)]

    with CaptureQueriesContext(connection) as queries:
        deleted = Message.objects.filter(pk__in=gone).delete_rows()

    assert deleted == 3
    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["DELETE"]
    assert list(Message.objects.values_list("pk", flat=True)) == [kept.pk]
