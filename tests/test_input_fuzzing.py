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
VALID = {"id": "fuzz", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {"a": 1},
         "webhookUrl": "http://127.0.0.1:9/hook"}

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
    expected = (moment.replace(microsecond=0, tzinfo=timezone(offset)) + timedelta(
        microseconds=int((fraction[1:] or "0").ljust(6, "0")[:6]))).astimezone(UTC)

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
