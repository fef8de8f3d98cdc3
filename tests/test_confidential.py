"""Secrets given for a receiver are write-only: sealed at rest, masked when shown, rotatable."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from messages import delivery
from messages.confidential import (
    MASK,
    HeadersUnreadable,
    derived_key,
    masked_url,
    open_headers,
    seal_headers,
)
from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus
from messages.retry_policy import Verdict
from messages.webhook_client import WebhookResult
from tests.factories import make_message

pytestmark = pytest.mark.django_db

SECRET_HEADERS = {"Authorization": "Bearer downstream-secret-7f3a", "X-Tenant": "acme"}


def stored_headers_column(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT headers_sealed FROM {Message._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def test_header_values_are_stored_encrypted_and_never_in_the_clear(api):
    response = api.post(
        "/messages",
        {
            "id": "sealed",
            "scheduleTo": "2099-01-01T00:00:00Z",
            "payload": {},
            "webhookUrl": "https://user:hunter2@example.com/hook",
            "headers": SECRET_HEADERS,
        },
    )
    assert response.status_code == 200

    message = Message.objects.get(message_id="sealed")
    column = stored_headers_column(message.pk)
    assert "downstream-secret-7f3a" not in column
    assert "acme" not in column
    assert message.headers == SECRET_HEADERS  # opened for the call


def test_the_api_shows_header_names_and_masks_values_and_url_credentials(api):
    api.post(
        "/messages",
        {
            "id": "shown",
            "scheduleTo": "2099-01-01T00:00:00Z",
            "payload": {},
            "webhookUrl": "https://user:hunter2@example.com/hook?x=1",
            "headers": SECRET_HEADERS,
        },
    )

    detail = api.get("/messages/shown")

    text = detail.content.decode()
    assert detail.json()["headers"] == {"Authorization": MASK, "X-Tenant": MASK}
    assert detail.json()["webhookUrl"] == f"https://{MASK}@example.com/hook?x=1"
    for secret in ("downstream-secret-7f3a", "acme", "hunter2", "user:"):
        assert secret not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com/a", "https://example.com/a"),
        ("https://u:p@example.com:8443/a?b=c", f"https://{MASK}@example.com:8443/a?b=c"),
        ("http://token@[::1]:9/x", f"http://{MASK}@[::1]:9/x"),
        ("https://a@b:c@example.com/", f"https://{MASK}@example.com/"),
    ],
)
def test_masked_url_hides_only_the_userinfo(url, shown):
    assert masked_url(url) == shown


def test_the_sealed_headers_reach_the_receiver(receiver, hook_path):
    message = make_message(message_id="to-receiver", webhook_url=receiver.url(hook_path), headers=SECRET_HEADERS)

    delivery.deliver_messages([message.pk])

    [call] = receiver.calls_to(hook_path)
    assert call.headers["Authorization"] == "Bearer downstream-secret-7f3a"


def test_rotation_new_key_first_opens_the_old_and_reseal_moves_every_row(settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.HEADER_ENCRYPTION_KEYS = [old_key]
    message = make_message(message_id="rotated", headers=SECRET_HEADERS)
    sealed_with_old = stored_headers_column(message.pk)

    settings.HEADER_ENCRYPTION_KEYS = [new_key, old_key]
    assert Message.objects.get(pk=message.pk).headers == SECRET_HEADERS
    call_command("reseal_headers", stdout=StringIO())

    settings.HEADER_ENCRYPTION_KEYS = [new_key]
    assert stored_headers_column(message.pk) != sealed_with_old
    assert Message.objects.get(pk=message.pk).headers == SECRET_HEADERS


def test_without_explicit_keys_a_secret_key_rotation_keeps_headers_readable(settings):
    settings.HEADER_ENCRYPTION_KEYS = []
    settings.SECRET_KEY = "the-old-secret-key-" * 3
    sealed = seal_headers(SECRET_HEADERS)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-new-secret-key-" * 3, ["the-old-secret-key-" * 3]
    assert open_headers(sealed) == SECRET_HEADERS

    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(HeadersUnreadable):
        open_headers(sealed)
    assert derived_key("a") != derived_key("b")


def test_headers_sealed_with_a_lost_key_fail_the_message_at_once_and_are_not_shown(settings, api):
    settings.HEADER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    message = make_message(message_id="lost-key", headers=SECRET_HEADERS, max_attempts=5)
    settings.HEADER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    assert api.get("/messages/lost-key").json()["headers"] == {}
    with pytest.raises(CommandError):
        call_command("reseal_headers", stdout=StringIO())
    claimed = delivery.claim_due_messages([message.pk], now=timezone.now())[0]
    assert message.due_at is not None
    result = WebhookResult(started_at=message.due_at, duration_ms=0, error="HeadersUnreadable")
    decision = delivery.record_attempt(claimed, result)

    assert decision.verdict is Verdict.FAILED
    assert Message.objects.get(pk=message.pk).status == MessageStatus.FAILED


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_background_processes")
def test_the_migration_gives_existing_messages_to_api_token_and_seals_their_headers():
    # Given a message stored before 0005, its headers a plain JSON column
    executor = MigrationExecutor(connection)
    before = [("scheduler", "0004_payload_text_and_delivery_id")]
    executor.migrate(before)
    old_message = executor.loader.project_state(before).apps.get_model("scheduler", "Message")
    row = old_message.objects.create(
        message_id="from-before",
        schedule_to="2026-01-01T00:00:00Z",
        webhook_url="https://example.com/",
        payload_json="{}",
        headers=SECRET_HEADERS,
    )
    plain = old_message.objects.create(
        message_id="no-headers", schedule_to="2026-01-01T00:00:00Z", webhook_url="https://example.com/", payload_json="{}"
    )

    # When the migrations run
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    # Then the token owns them and the headers are sealed
    message = Message.objects.get(pk=row.pk)
    assert message.owner_id == API_TOKEN_KEY_ID
    assert message.headers == SECRET_HEADERS
    assert "downstream-secret-7f3a" not in stored_headers_column(row.pk)
    assert Message.objects.get(pk=plain.pk).headers_sealed == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_background_processes")
def test_unapplying_the_migration_gives_the_previous_version_its_headers_back():
    make_message(message_id="kept", headers=SECRET_HEADERS)
    executor = MigrationExecutor(connection)
    before = [("scheduler", "0004_payload_text_and_delivery_id")]

    executor.migrate(before)

    old_message = executor.loader.project_state(before).apps.get_model("scheduler", "Message")
    assert old_message.objects.get(message_id="kept").headers == SECRET_HEADERS
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_background_processes")
def test_unapplying_the_migration_is_refused_up_front_while_two_keys_share_an_id():
    from messages.api_keys import create_api_key

    other, _ = create_api_key(name="other")
    make_message(message_id="shared")
    make_message(message_id="shared", owner_id=other.pk)
    executor = MigrationExecutor(connection)

    with pytest.raises(RuntimeError, match="used by more than one key"):
        executor.migrate([("scheduler", "0004_payload_text_and_delivery_id")])

    # Nothing of 0005 was undone: both keep their id and the per-key indexes serve them. (The
    # migrations after it, which are not atomic, were unapplied first: forward again here.)
    assert Message.objects.filter(message_id="shared").count() == 2
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Message.objects.filter(message_id="shared").count() == 2


def test_headers_sealed_before_explicit_keys_were_set_stay_readable_after(settings):
    settings.HEADER_ENCRYPTION_KEYS = []
    message = make_message(message_id="before-explicit-keys", headers=SECRET_HEADERS)

    settings.HEADER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    assert Message.objects.get(pk=message.pk).headers == SECRET_HEADERS
    call_command("reseal_headers", stdout=StringIO())
    settings.SECRET_KEY = "another-secret-key-" * 3  # the derived key is gone: the explicit one opens it
    assert Message.objects.get(pk=message.pk).headers == SECRET_HEADERS
