"""Idempotency-Key on POST /messages: a retried create answers as the first did, once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from messages import idempotency
from messages.api_keys import create_api_key
from messages.models import IdempotentRequest, Message, MessageStatus

BODY = {"id": "once", "scheduleTo": "2099-01-01T00:00:00Z", "payload": {"v": 1}, "webhookUrl": "https://example.com/hook"}


def post(api, body=BODY, key: str | None = "key-1"):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return api.post("/messages", body, format="json", **headers)


@pytest.mark.django_db
def test_the_same_key_and_body_answer_the_first_answer_and_schedule_nothing_new(api):
    first = post(api)
    again = post(api)

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.content == again.content == b'{"status":"scheduled","messageId":"once"}'
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(message_id="once").count() == 1


@pytest.mark.django_db
def test_the_answer_is_replayed_even_after_the_message_was_delivered_and_its_id_freed(api):
    post(api)
    Message.objects.filter(message_id="once").update(status=MessageStatus.DELIVERED, due_at=None, finished_at=timezone.now())

    again = post(api)

    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(message_id="once").count() == 1  # the delivered one, nothing new


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_422_and_schedules_nothing(api):
    post(api)

    other = post(api, {**BODY, "id": "another", "payload": {"v": 2}})

    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    assert not Message.objects.filter(message_id="another").exists()


@pytest.mark.django_db
def test_without_the_header_the_old_behaviour_holds(api):
    assert post(api, key=None).status_code == 200
    assert post(api, key=None).status_code == 409


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "clé", "tab\there"])
def test_a_malformed_key_is_a_400_and_keeps_nothing(api, key):
    response = post(api, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert not Message.objects.exists()
    assert not IdempotentRequest.objects.exists()


@pytest.mark.django_db
def test_an_invalid_body_with_a_key_is_a_400_and_keeps_nothing(api):
    response = post(api, {**BODY, "scheduleTo": "soon"})

    assert response.status_code == 400
    assert not IdempotentRequest.objects.exists()


@pytest.mark.django_db
def test_a_refused_create_keeps_no_answer_so_its_retry_runs_again(api):
    # Given the id taken by a message created without a key: the keyed create is refused
    post(api, key=None)
    assert post(api).status_code == 409
    assert not IdempotentRequest.objects.exists()

    # When the other message is cancelled and the keyed create retried
    api.delete("/messages/once")
    retried = post(api)

    # Then it is made this time
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried


@pytest.mark.django_db
def test_keys_are_each_api_key_s_own(api):
    _, secret = create_api_key(name="other")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert post(api).status_code == 200
    theirs = post(other)

    assert theirs.status_code == 200
    assert "Idempotent-Replayed" not in theirs
    assert Message.objects.filter(message_id="once").count() == 2


@pytest.mark.django_db
def test_past_its_time_to_live_a_key_is_a_new_request(api, settings):
    post(api)
    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL + 1))

    again = post(api)

    assert again.status_code == 409  # run again: the id is still taken by the first message


@pytest.mark.django_db
def test_answers_past_their_time_to_live_are_pruned(api):
    post(api)
    post(api, {**BODY, "id": "fresh"}, key="key-2")
    IdempotentRequest.objects.filter(key="key-1").update(created_at=timezone.now() - timedelta(days=2))

    assert idempotency.forget_expired(now=timezone.now(), ttl_seconds=24 * 3600) == 1
    assert list(IdempotentRequest.objects.values_list("key", flat=True)) == ["key-2"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(4))
def test_twins_sent_at_once_get_one_answer_and_one_message(rounds):
    barrier = threading.Barrier(4)
    answers: list[tuple[int, bytes, bool]] = []

    def twin() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {django_settings.API_TOKEN}")
        barrier.wait()
        try:
            response = post(client)
            answers.append((response.status_code, response.content, response.has_header("Idempotent-Replayed")))
        finally:
            connection.close()

    threads = [threading.Thread(target=twin) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(answer[:2] for answer in answers) == [(200, b'{"status":"scheduled","messageId":"once"}')] * 4
    assert sorted(answer[2] for answer in answers) == [False, True, True, True]
    assert Message.objects.filter(message_id="once").count() == 1
