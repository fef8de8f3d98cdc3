"""Every bad input to POST /messages gets a 4xx with a JSON `detail` and leaves no trace.

"No trace" is checked twice: the table holds no new row, and a valid POST with the same id
right after is accepted (the old service answered 500 and left the id stuck behind a 409).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from messages.models import API_TOKEN_KEY_ID, Message

pytestmark = pytest.mark.django_db

MESSAGE_ID = "validation-probe"
MISSING: Any = object()  # stands in for any field's value: message_body leaves that field out
WEBHOOK_URL_MAX_LENGTH = 2048


def message_body(message_id: str = MESSAGE_ID, **overrides) -> dict:
    body = {
        "id": message_id,
        "scheduleTo": "2026-04-15T02:41:45.000Z",
        "payload": {"data": "your webhook payload"},
        "webhookUrl": "https://your-webhook-endpoint.com",
    }
    body.update(overrides)
    return {name: value for name, value in body.items() if value is not MISSING}


def post_raw(api, raw: bytes, content_type: str = "application/json"):
    return api.generic("POST", "/messages", data=raw, content_type=content_type)


@pytest.fixture
def rows_before() -> int:
    # payload= is a Message property, which Model.__init__ sets; the django-stubs plugin knows only fields.
    Message.objects.create(  # type: ignore[misc]
        owner_id=API_TOKEN_KEY_ID,
        message_id="already-there",
        schedule_to=datetime(2030, 1, 1, tzinfo=UTC),
        due_at=datetime(2030, 1, 1, tzinfo=UTC),
        webhook_url="https://example.com",
        payload={},
    )
    return Message.objects.count()


def assert_refused(response, status: int = 400, *, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if status == 400 and "errors" in body:
        for messages in body["errors"].values():
            assert isinstance(messages, list)
            assert messages
    if field is not None:
        assert field in body["errors"], body
        assert all(isinstance(message, str) and message for message in body["errors"][field])
    return body


def assert_no_trace(api, rows_before: int, message_id: str = MESSAGE_ID) -> None:
    assert Message.objects.count() == rows_before
    retry = api.post("/messages", message_body(message_id))
    assert retry.status_code == 200, retry.content
    assert retry.json() == {"status": "scheduled", "messageId": message_id}


def stored(message_id: str = MESSAGE_ID) -> Message:
    return Message.objects.get(message_id=message_id)


# --- scheduleTo ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule_to",
    [
        pytest.param("2026-04-15T02:41:45", id="no-offset"),
        pytest.param("2026-04-15T02:41:45.000", id="no-offset-with-fraction"),
        pytest.param("2026-04-15", id="date-only"),
        pytest.param("garbage", id="garbage"),
        pytest.param("", id="empty-string"),
        pytest.param("   ", id="blank"),
        pytest.param(1776220905, id="number"),
        pytest.param(None, id="null"),
        pytest.param(True, id="boolean"),
        pytest.param(["2026-04-15T02:41:45Z"], id="array"),
        pytest.param({"at": "2026-04-15T02:41:45Z"}, id="object"),
        pytest.param("２０２６-04-15T02:41:45Z", id="fullwidth-digits"),
        pytest.param("٢٠٢٦-04-15T02:41:45Z", id="arabic-indic-digits"),
        pytest.param("9999-12-31T23:59:59-01:00", id="year-overflow-once-in-utc"),
        pytest.param("0001-01-01T00:00:00+01:00", id="year-underflow-once-in-utc"),
        pytest.param("2026-13-01T00:00:00Z", id="month-13"),
        pytest.param("2026-02-30T00:00:00Z", id="february-30"),
        pytest.param("2026-04-15T24:00:01Z", id="hour-24"),
        pytest.param("2026-04-15T02:41:45+25:00", id="offset-out-of-range"),
        pytest.param("15/04/2026 02:41:45 UTC", id="not-iso"),
        pytest.param("2026-04-15T02:41:45Z\n", id="trailing-newline"),
    ],
)
def test_bad_schedule_to_is_refused_and_leaves_no_trace(api, rows_before, schedule_to):
    response = api.post("/messages", message_body(scheduleTo=schedule_to))

    assert_refused(response, field="scheduleTo")
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    ("schedule_to", "stored_utc"),
    [
        ("2026-04-15T02:41:45Z", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-15T02:41:45.000Z", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-15T02:41:45+00:00", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-15T04:41:45+02:00", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-15T04:41:45+0200", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-14T21:11:45-05:30", datetime(2026, 4, 15, 2, 41, 45, tzinfo=UTC)),
        ("2026-04-15T02:41:45.123Z", datetime(2026, 4, 15, 2, 41, 45, 123000, tzinfo=UTC)),
        ("2026-04-15T02:41:45.123456789Z", datetime(2026, 4, 15, 2, 41, 45, 123456, tzinfo=UTC)),
        ("2026-04-15T04:41:45.5+02:00", datetime(2026, 4, 15, 2, 41, 45, 500000, tzinfo=UTC)),
        ("9999-12-31T23:59:59+01:00", datetime(9999, 12, 31, 22, 59, 59, tzinfo=UTC)),
    ],
)
def test_schedule_to_with_an_offset_is_accepted_and_stored_in_utc(api, schedule_to, stored_utc):
    response = api.post("/messages", message_body(scheduleTo=schedule_to))

    assert response.status_code == 200, response.content
    message = stored()
    assert message.schedule_to == stored_utc
    offset = message.schedule_to.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert message.due_at == stored_utc


# --- webhookUrl ----------------------------------------------------------------------------


def url_of_length(length: int) -> str:
    prefix = "https://example.com/"
    return prefix + "a" * (length - len(prefix))


@pytest.mark.parametrize(
    "webhook_url",
    [
        pytest.param("ftp://example.com/hook", id="ftp"),
        pytest.param("mailto:ops@example.com", id="mailto"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("/x", id="relative"),
        pytest.param("example.com/hook", id="no-scheme"),
        pytest.param("http://", id="scheme-only"),
        pytest.param("http:///hook", id="no-host"),
        pytest.param("https://exa mple.com/", id="space-in-host"),
        pytest.param("https://example.com/a b", id="space-in-path"),
        pytest.param(" https://example.com/", id="leading-space"),
        pytest.param("https://example.com/\n", id="newline"),
        pytest.param("http://h:99999/", id="port-out-of-range"),
        pytest.param("http://h:port/", id="port-not-a-number"),
        pytest.param(url_of_length(WEBHOOK_URL_MAX_LENGTH + 1), id="one-over-2048-chars"),
        pytest.param(url_of_length(10_000), id="far-over-2048-chars"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param({"url": "https://example.com"}, id="object"),
    ],
)
def test_bad_webhook_url_is_refused_and_leaves_no_trace(api, rows_before, webhook_url):
    response = api.post("/messages", message_body(webhookUrl=webhook_url))

    assert_refused(response, field="webhookUrl")
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    "webhook_url",
    [
        pytest.param("http://n8n:5678/webhook/x", id="no-tld-with-port"),
        pytest.param("https://your-webhook-endpoint.com", id="contract-example"),
        pytest.param("http://127.0.0.1:8080/hook?a=1&b=2", id="ip-and-query"),
        pytest.param("https://[::1]:8443/hook", id="ipv6"),
        pytest.param("https://user:secret@example.com/hook", id="credentials"),
        pytest.param(url_of_length(WEBHOOK_URL_MAX_LENGTH), id="exactly-2048-chars"),
    ],
)
def test_good_webhook_url_is_accepted_and_stored_as_given(api, webhook_url):
    response = api.post("/messages", message_body(webhookUrl=webhook_url))

    assert response.status_code == 200, response.content
    assert stored().webhook_url == webhook_url


# --- payload -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("a string", id="string"),
        pytest.param(42, id="number"),
        pytest.param(4.2, id="float"),
        pytest.param(None, id="null"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
    ],
)
def test_payload_that_is_not_an_object_or_array_is_refused(api, rows_before, payload):
    response = api.post("/messages", message_body(payload=payload))

    assert_refused(response, field="payload")
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    "payload",
    [{}, {"data": {"nested": [1, 2, None]}}, [], [1, "two", {"three": 3}], {"text": "héllo 日本"}],
    ids=["empty-object", "object", "empty-array", "array", "unicode"],
)
def test_payload_object_or_array_is_accepted_and_stored_unchanged(api, payload):
    response = api.post("/messages", message_body(payload=payload))

    assert response.status_code == 200, response.content
    assert stored().payload == payload


def compact_json_length(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def test_payload_over_the_limit_is_refused_with_413(api, rows_before, settings):
    # Given a cap of 100 bytes and a payload of 101 bytes encoded as JSON
    settings.PAYLOAD_MAX_BYTES = 100
    payload = {"x": "a" * 93}
    assert compact_json_length(payload) == 101

    response = api.post("/messages", message_body(payload=payload))

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


def test_payload_exactly_at_the_limit_is_accepted(api, settings):
    settings.PAYLOAD_MAX_BYTES = 100
    payload = {"x": "a" * 92}
    assert compact_json_length(payload) == 100

    response = api.post("/messages", message_body(payload=payload))

    assert response.status_code == 200, response.content
    assert stored().payload == payload


def test_payload_limit_counts_encoded_bytes_not_characters(api, rows_before, settings):
    # 68 characters, but each "é" is two bytes in UTF-8: 128 bytes
    settings.PAYLOAD_MAX_BYTES = 100
    payload = {"x": "é" * 60}

    response = api.post("/messages", message_body(payload=payload))

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


def test_payload_over_one_mebibyte_is_refused_with_413_at_the_default_limit(api, rows_before):
    payload = {"x": "a" * (1024 * 1024)}

    response = api.post("/messages", message_body(payload=payload))

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


def test_payload_of_exactly_one_mebibyte_is_accepted_at_the_default_limit(api):
    payload = {"x": "a" * (1024 * 1024 - 8)}
    assert compact_json_length(payload) == 1024 * 1024

    response = api.post("/messages", message_body(payload=payload))

    assert response.status_code == 200


def test_body_larger_than_the_cap_is_refused_with_413_even_when_the_payload_is_small(api, rows_before, settings):
    # The cap is the payload limit plus room for the envelope (64 KiB)
    settings.PAYLOAD_MAX_BYTES = 100
    raw = json.dumps(message_body(padding="p" * 70_000)).encode()

    response = post_raw(api, raw)

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


def test_body_larger_than_the_cap_is_refused_with_413_before_it_is_parsed(api, rows_before, settings):
    settings.PAYLOAD_MAX_BYTES = 100

    response = post_raw(api, b"not json at all " * 5_000)

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


def test_body_of_two_mebibytes_is_refused_with_413_at_the_default_limit(api, rows_before):
    raw = json.dumps(message_body(padding="p" * (2 * 1024 * 1024))).encode()

    response = post_raw(api, raw)

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


# --- id ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 201, id="201-chars"),
        pytest.param("a/b", id="slash"),
        pytest.param("/", id="only-slash"),
        pytest.param("a b", id="space"),
        pytest.param(" ab", id="leading-space"),
        pytest.param("ab\n", id="trailing-newline"),
        pytest.param("a#b", id="hash"),
        pytest.param("a?b", id="question-mark"),
        pytest.param("a%2Fb", id="percent"),
        pytest.param("héllo", id="unicode-letter-inside"),
        pytest.param("日本", id="unicode-only"),
        pytest.param("ａｂｃ", id="fullwidth-letters"),
        pytest.param(None, id="null"),
        pytest.param(["abc"], id="array"),
    ],
)
def test_bad_id_is_refused_and_leaves_no_trace(api, rows_before, message_id):
    response = api.post("/messages", message_body(message_id))

    assert_refused(response, field="id")
    assert_no_trace(api, rows_before)
    assert not Message.objects.filter(message_id=message_id).exists()


@pytest.mark.parametrize(
    "message_id",
    [
        pytest.param("aZ09-_.:@+=~", id="every-allowed-kind-of-char"),
        pytest.param("a" * 200, id="200-chars"),
        pytest.param("order:2026-04-15@tenant+1=ok~v.2_x", id="realistic"),
        pytest.param("x", id="one-char"),
    ],
)
def test_good_id_is_accepted_and_can_be_read_and_deleted_by_its_path(api, message_id):
    response = api.post("/messages", message_body(message_id))

    assert response.status_code == 200, response.content
    assert response.json() == {"status": "scheduled", "messageId": message_id}
    assert api.get(f"/messages/{message_id}").json()["messageId"] == message_id
    assert api.delete(f"/messages/{message_id}").json() == {"status": "deleted", "messageId": message_id}


# --- the body as a whole -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="text"),
        pytest.param(b'{"id": "validation-probe",', id="truncated"),
        pytest.param(b"{'id': 'validation-probe'}", id="single-quotes"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"id": "validation-probe"} trailing', id="trailing-garbage"),
    ],
)
def test_body_that_is_not_json_is_refused_with_a_detail(api, rows_before, raw):
    response = post_raw(api, raw)

    assert_refused(response, 400)
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(json.dumps([message_body()]).encode(), id="array"),
        pytest.param(b'"validation-probe"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
    ],
)
def test_body_that_is_json_but_not_an_object_is_refused(api, rows_before, raw):
    response = post_raw(api, raw)

    body = assert_refused(response, 400)
    assert body["errors"]
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/html"],
)
def test_body_with_a_content_type_other_than_json_is_refused_with_415(api, rows_before, content_type):
    raw = json.dumps(message_body()).encode()

    response = post_raw(api, raw, content_type=content_type)

    assert_refused(response, 415)
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize("field", ["id", "scheduleTo", "payload", "webhookUrl"])
def test_missing_field_is_named_in_errors(api, rows_before, field):
    response = api.post("/messages", message_body(**{field: MISSING}))

    assert_refused(response, field=field)
    assert_no_trace(api, rows_before)


def test_empty_object_names_every_missing_field(api, rows_before):
    response = api.post("/messages", {})

    body = assert_refused(response)
    assert set(body["errors"]) == {"id", "scheduleTo", "payload", "webhookUrl"}
    assert_no_trace(api, rows_before)


def test_every_bad_field_is_named_at_once(api, rows_before):
    response = api.post("/messages", message_body(scheduleTo="2026-04-15T02:41:45", payload="x", webhookUrl="ftp://x"))

    body = assert_refused(response)
    assert set(body["errors"]) == {"scheduleTo", "payload", "webhookUrl"}
    assert_no_trace(api, rows_before)


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"X-Tenant": "a"}, {}, {"X-Tenant": "a", "Authorization": "Bearer downstream", "X-Empty": ""}],
    ids=["one", "none", "several"],
)
def test_valid_headers_are_accepted_and_shown_by_the_message_detail_with_their_values_masked(api, headers):
    response = api.post("/messages", message_body(headers=headers))

    assert response.status_code == 200, response.content
    assert api.get(f"/messages/{MESSAGE_ID}").json()["headers"] == dict.fromkeys(headers, "********")
    assert Message.objects.get(message_id=MESSAGE_ID).headers == headers


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Host": "evil.example"}, id="host"),
        pytest.param({"host": "evil.example"}, id="host-lowercase"),
        pytest.param({"Content-Length": "1"}, id="content-length"),
        pytest.param({"Transfer-Encoding": "chunked"}, id="transfer-encoding"),
        pytest.param({"Content-Type": "text/plain"}, id="content-type"),
        pytest.param({"Connection": "close"}, id="connection"),
        pytest.param({"Idempotency-Key": "other"}, id="idempotency-key"),
        pytest.param({"IDEMPOTENCY-KEY": "other"}, id="idempotency-key-uppercase"),
        pytest.param({"webhook-signature": "v1,forged"}, id="webhook-signature"),
        pytest.param({"Webhook-Id": "forged"}, id="webhook-id"),
        pytest.param({"X Tenant": "a"}, id="name-with-space"),
        pytest.param({"X-Tenant:": "a"}, id="name-with-colon"),
        pytest.param({"": "a"}, id="empty-name"),
        pytest.param({"X-Tenant": "a\r\nX-Injected: 1"}, id="value-with-crlf"),
        pytest.param({"X-Tenant": "a\n"}, id="value-with-newline"),
        pytest.param({"X-Tenant": 1}, id="number-value"),
        pytest.param({"X-Tenant": None}, id="null-value"),
        pytest.param({"X-Tenant": ["a"]}, id="array-value"),
        pytest.param("X-Tenant: a", id="string"),
        pytest.param(["X-Tenant", "a"], id="array"),
        pytest.param(None, id="null"),
        pytest.param({f"X-H{index}": "v" for index in range(51)}, id="51-headers"),
    ],
)
def test_bad_headers_are_refused_and_leave_no_trace(api, rows_before, headers):
    response = api.post("/messages", message_body(headers=headers))

    assert_refused(response, field="headers")
    assert_no_trace(api, rows_before)


# --- maxAttempts and timeoutSeconds ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxAttempts", 0),
        ("maxAttempts", 21),
        ("maxAttempts", -1),
        ("maxAttempts", "x"),
        ("maxAttempts", 2.5),
        ("maxAttempts", None),
        ("timeoutSeconds", 0),
        ("timeoutSeconds", 121),
        ("timeoutSeconds", "x"),
        ("timeoutSeconds", None),
    ],
)
def test_option_out_of_range_is_refused_and_leaves_no_trace(api, rows_before, field, value):
    response = api.post("/messages", message_body(**{field: value}))

    assert_refused(response, field=field)
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(
    ("field", "value", "column"),
    [
        ("maxAttempts", 1, "max_attempts"),
        ("maxAttempts", 20, "max_attempts"),
        ("timeoutSeconds", 1, "timeout_seconds"),
        ("timeoutSeconds", 120, "timeout_seconds"),
    ],
)
def test_option_at_its_bounds_is_accepted_and_stored(api, field, value, column):
    response = api.post("/messages", message_body(**{field: value}))

    assert response.status_code == 200, response.content
    assert getattr(stored(), column) == value
    assert api.get(f"/messages/{MESSAGE_ID}").json()[field] == value


def test_a_payload_with_a_nul_character_is_refused_on_every_database(api):
    # Found by the hypothesis tests on PostgreSQL, whose jsonb cannot store U+0000: it was a 500.
    response = api.post(
        "/messages",
        {"id": "nul", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {"text": "a\x00b"}, "webhookUrl": "http://127.0.0.1:9/x"},
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


# --- bodies no rule could read ---------------------------------------------------------------


def test_json_nested_a_hundred_thousand_deep_is_refused_not_a_500(api, rows_before):
    raw = b'{"id":"deep","scheduleTo":"2030-01-01T00:00:00Z","webhookUrl":"https://example.com/","payload":' + (
        b"[" * 100_000 + b"]" * 100_000 + b"}"
    )

    response = post_raw(api, raw)

    assert_refused(response, 400)
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize(("depth", "status"), [(200, 200), (201, 400), (900, 400)])
def test_a_payload_may_nest_two_hundred_deep(api, rows_before, depth, status):
    payload: list[object] = [0]
    for _ in range(depth - 1):
        payload = [payload]

    response = api.post("/messages", message_body(payload=payload))

    assert response.status_code == status, response.content
    if status == 400:
        assert_refused(response, 400, field="payload")
        assert_no_trace(api, rows_before)


def test_a_lone_surrogate_in_the_payload_is_refused_not_a_500(api, rows_before):
    raw = b'{"id":"lone","scheduleTo":"2030-01-01T00:00:00Z","webhookUrl":"https://example.com/","payload":{"s":"\\ud800"}}'

    response = post_raw(api, raw)

    assert_refused(response, 400, field="payload")
    assert_no_trace(api, rows_before)


def test_a_body_past_djangos_upload_limit_gets_the_json_413(api, rows_before):
    raw = json.dumps(message_body(padding="p" * (3 * 1024 * 1024))).encode()

    response = post_raw(api, raw)

    assert_refused(response, 413)
    assert_no_trace(api, rows_before)


@pytest.mark.parametrize("url", ["http://.com/", "http://ex..com/", "http://ex.com\\@evil.com/"])
def test_urls_that_parsers_read_differently_are_refused(api, rows_before, url):
    # An empty host label, or a backslash before "@" (some parsers take evil.com for the host)
    assert_refused(api.post("/messages", message_body(webhookUrl=url)), field="webhookUrl")
    assert Message.objects.count() == rows_before
