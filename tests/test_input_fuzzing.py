"""Property-based tests of the input rules: no input gives a 5xx, every refusal carries a
`detail`, and a refused request writes nothing (rows and Redis keys counted before and after)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages.api.serializers import MESSAGE_ID_PATTERN
from messages.models import Message

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALID = {"id": "fuzz", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {"a": 1}, "webhookUrl": "http://127.0.0.1:9/hook"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def post_and_check(api, redis_server, body) -> int:
    """POSTs `body`; checks the promises; removes what an accepted request created."""
    rows, keys = Message.objects.count(), redis_server.client().dbsize()
    response = api.generic("POST", "/messages", json.dumps(body), content_type="application/json")
    assert response.status_code < 500, response.content
    if response.status_code == 200:
        Message.objects.filter(message_id=body["id"]).delete()
    else:
        assert 400 <= response.status_code < 500
        assert isinstance(response.json()["detail"], str)
        assert response.json()["detail"]
        assert (Message.objects.count(), redis_server.client().dbsize()) == (rows, keys)
    return response.status_code


@FUZZ
@given(message_id=st.one_of(st.text(max_size=250), st.from_regex(MESSAGE_ID_PATTERN, fullmatch=True)))
def test_any_id_is_accepted_exactly_when_it_follows_the_rule(api, redis_server, message_id):
    status = post_and_check(api, redis_server, {**VALID, "id": message_id})
    assert (status == 200) == bool(re.fullmatch(MESSAGE_ID_PATTERN, message_id))


offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda minutes: timedelta(minutes=minutes))
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1))


def offset_forms(offset: timedelta) -> st.SearchStrategy[str]:
    sign = "-" if offset < timedelta(0) else "+"
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    forms = [f"{sign}{hours:02d}:{minutes:02d}", f"{sign}{hours:02d}{minutes:02d}"]
    if offset == timedelta(0):
        forms.append("Z")
    return st.sampled_from(forms)


@FUZZ
@given(moment=moments, offset=offsets, data=st.data(), fraction=st.sampled_from(["", ".5", ".123", ".123456", ".123456789"]))
def test_every_offset_form_is_stored_as_the_same_utc_moment(api, redis_server, moment, offset, data, fraction):
    suffix = data.draw(offset_forms(offset))
    text = moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + fraction + suffix
    expected = (
        moment.replace(microsecond=0, tzinfo=timezone(offset))
        + timedelta(microseconds=int((fraction[1:] or "0").ljust(6, "0")[:6]))
    ).astimezone(UTC)

    response = api.post("/messages", {**VALID, "scheduleTo": text})

    assert response.status_code == 200, response.content
    assert Message.objects.get(message_id="fuzz").schedule_to == expected
    Message.objects.all().delete()


@FUZZ
@given(schedule_to=st.one_of(st.text(max_size=40), json_values))
def test_any_schedule_to_is_accepted_or_refused_cleanly(api, redis_server, schedule_to):
    post_and_check(api, redis_server, {**VALID, "scheduleTo": schedule_to})


@FUZZ
@given(url=st.one_of(st.text(max_size=80), st.from_regex(r"\Ahttps?://[^\s]{0,60}\Z"), json_values))
def test_any_webhook_url_is_accepted_or_refused_cleanly(api, redis_server, url):
    post_and_check(api, redis_server, {**VALID, "webhookUrl": url})


@FUZZ
@given(payload=json_values)
def test_payload_is_accepted_exactly_when_it_is_an_object_or_array(api, redis_server, payload):
    status = post_and_check(api, redis_server, {**VALID, "payload": payload})
    assert (status == 200) == (isinstance(payload, (dict, list)) and not has_nul(payload))


def has_nul(value) -> bool:
    """PostgreSQL's jsonb cannot hold U+0000, so the API refuses it in any string of the payload."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(key) or has_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(has_nul(item) for item in value)


@FUZZ
@given(headers=st.one_of(st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=5), json_values))
def test_any_headers_option_is_accepted_or_refused_cleanly(api, redis_server, headers):
    post_and_check(api, redis_server, {**VALID, "headers": headers})


@FUZZ
@given(body=st.one_of(json_values, st.dictionaries(st.sampled_from(list(VALID) + ["maxAttempts", "timeoutSeconds"]), json_values)))
def test_any_body_shape_is_accepted_or_refused_cleanly(api, redis_server, body):
    rows = Message.objects.count()
    response = api.generic("POST", "/messages", json.dumps(body), content_type="application/json")
    assert response.status_code < 500
    if response.status_code != 200:
        assert response.json()["detail"]
        assert Message.objects.count() == rows
    Message.objects.all().delete()


# --- Deep documents and odd unicode, sent as raw JSON text -----------------------------------

# What a JSON text can carry that Python's own strings make awkward: lone surrogates (only as
# \u escapes), NUL, non-characters, characters outside the BMP, combining marks, bidi controls.
ODD_CHARACTERS = [
    "\\ud800",
    "\\udfff",
    "\\udbff\\udfff",
    "\\u0000",
    "\\ufffe",
    "\\uffff",
    "\U0001f600",
    "e\u0301",
    "\u202e",
    "\u200b",
    "\\u2028",
    "\x7f",
    "\\\\",
    '\\"',
]
odd_text = st.lists(st.sampled_from(ODD_CHARACTERS) | st.text(max_size=3), max_size=6).map("".join)


def nested(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"k":': "}"}[opener]
    return opener * depth + "1" + closer * depth


def post_raw_and_check(api, redis_server, raw: str) -> int:
    rows, keys = Message.objects.count(), redis_server.client().dbsize()
    response = api.generic("POST", "/messages", raw.encode("utf-8", "surrogatepass"), content_type="application/json")
    assert response.status_code < 500, response.content
    assert response["Content-Type"].startswith("application/json")
    if response.status_code == 200:
        Message.objects.all().delete()
    else:
        assert response.json()["detail"]
        assert (Message.objects.count(), redis_server.client().dbsize()) == (rows, keys)
    return response.status_code


@FUZZ
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["[", '{"k":']))
def test_any_nesting_depth_is_accepted_up_to_the_limit_and_refused_past_it_never_a_500(api, redis_server, depth, opener):
    raw = (
        '{"id":"deep","scheduleTo":"2030-01-01T00:00:00Z","webhookUrl":"https://example.com/","payload":'
        + nested(depth, opener)
        + "}"
    )
    status = post_raw_and_check(api, redis_server, raw)
    assert (status == 200) == (depth <= 200)


@FUZZ
@given(field=st.sampled_from(["id", "payload", "webhookUrl", "scheduleTo", "header-name", "header-value"]), text=odd_text)
def test_odd_unicode_anywhere_in_a_document_never_gives_a_500(api, redis_server, field, text):
    fields = {"id": '"odd"', "scheduleTo": '"2030-01-01T00:00:00Z"', "webhookUrl": '"https://example.com/"', "payload": '{"a":1}'}
    if field == "payload":
        fields["payload"] = f'{{"s":"{text}","{text}":[1]}}'
    elif field == "header-name":
        fields["headers"] = f'{{"{text}":"v"}}'
    elif field == "header-value":
        fields["headers"] = f'{{"X-A":"{text}"}}'
    else:
        fields[field] = f'"{text}"'
    raw = "{" + ",".join(f'"{name}":{value}' for name, value in fields.items()) + "}"
    post_raw_and_check(api, redis_server, raw)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/messages", b"{not json", 400),
        ("POST", "/messages", b'{"id": "\\ud800"}', 400),
        ("GET", "/no/such/path", b"", 404),
        ("PUT", "/messages", b"{}", 405),
        ("PATCH", "/health", b"{}", 405),
        ("POST", "/messages", b"[" * 3_000_000, 413),
    ],
)
def test_every_error_the_framework_raises_itself_is_json_with_a_detail(api, method, path, body, status):
    response = api.generic(method, path, body, content_type="application/json")

    assert response.status_code == status, response.content[:200]
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


def test_a_permission_denied_outside_drf_is_json_on_api_paths(rf):
    from messages.api.errors import permission_denied

    response = permission_denied(rf.get("/messages"))

    assert response.status_code == 403
    assert json.loads(response.content)["detail"]
