"""Every message belongs to the key that created it: another key's id is not there for it.

Two keys, A and B, each with its own messages, through every endpoint and filter; API_TOKEN is
key 0 like the others; read-only keys; keys from the command line; ops staff see all in the admin.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from messages.api_keys import create_api_key
from messages.models import API_TOKEN_KEY_ID, ApiKey, Message, MessageStatus
from tests.factories import make_message

pytestmark = pytest.mark.django_db

FUTURE = "2099-01-01T00:00:00Z"


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def body(message_id: str, **fields) -> dict:
    return {
        "id": message_id,
        "scheduleTo": FUTURE,
        "payload": {"for": message_id},
        "webhookUrl": "https://example.com/hook",
        **fields,
    }


@pytest.fixture
def key_a() -> tuple[ApiKey, APIClient]:
    key, secret = create_api_key(name="tenant A")
    return key, client_with(secret)


@pytest.fixture
def key_b() -> tuple[ApiKey, APIClient]:
    key, secret = create_api_key(name="tenant B")
    return key, client_with(secret)


def failed(owner: ApiKey, message_id: str) -> Message:
    return make_message(
        owner_id=owner.pk,
        message_id=message_id,
        status=MessageStatus.FAILED,
        due_at=None,
        finished_at=timezone.now() - timedelta(minutes=5),
        attempt_count=3,
    )


def test_each_key_owns_what_it_creates_and_ids_are_unique_per_key(key_a, key_b):
    (a, client_a), (b, client_b) = key_a, key_b

    assert client_a.post("/messages", body("same-id")).status_code == 200
    assert client_b.post("/messages", body("same-id")).status_code == 200
    assert client_a.post("/messages", body("same-id")).status_code == 409

    owners = sorted(Message.objects.filter(message_id="same-id").values_list("owner_id", flat=True))
    assert owners == sorted([a.pk, b.pk])


def test_a_key_lists_only_its_own_messages_whatever_the_filter(key_a, key_b):
    (a, client_a), (b, client_b) = key_a, key_b
    client_a.post("/messages", body("a-pending"))
    client_b.post("/messages", body("b-pending"))
    failed(a, "a-failed")
    failed(b, "b-failed")
    make_message(owner_id=b.pk, message_id="b-retrying", status=MessageStatus.RETRYING)

    def listed(client, **query) -> set[str]:
        response = client.get("/messages", query)
        assert response.status_code == 200
        return {job["messageId"] for job in response.json()["scheduledJobs"]}

    assert listed(client_a) == {"a-pending"}
    assert listed(client_a, status="scheduled") == {"a-pending"}
    assert listed(client_a, status="failed") == {"a-failed"}
    assert listed(client_a, status="retrying") == set()
    assert listed(client_b) == {"b-pending", "b-retrying"}
    assert client_a.get("/messages").json()["count"] == 1


def test_a_page_cursor_never_leads_into_another_keys_messages(key_a, key_b):
    (_, client_a), (_, client_b) = key_a, key_b
    for number in range(3):
        client_a.post("/messages", body(f"a-{number}"))
        client_b.post("/messages", body(f"b-{number}"))

    first = client_a.get("/messages", {"limit": 2}).json()
    second = client_a.get("/messages", {"limit": 2, "cursor": first["next"]}).json()

    seen = [job["messageId"] for job in first["scheduledJobs"] + second["scheduledJobs"]]
    assert sorted(seen) == ["a-0", "a-1", "a-2"]


def test_another_keys_message_answers_404_to_read_cancel_and_retry_and_stays_untouched(key_a, key_b):
    (_a, client_a), (b, client_b) = key_a, key_b
    client_b.post("/messages", body("b-only"))
    failed(b, "b-failed")

    for response in (
        client_a.get("/messages/b-only"),
        client_a.delete("/messages/b-only"),
        client_a.get("/messages/b-failed"),
        client_a.post("/messages/b-failed/retry", {}, format="json"),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["detail"]
    assert client_b.get("/messages/b-only").status_code == 200
    assert Message.objects.get(owner=b, message_id="b-failed").status == MessageStatus.FAILED


def test_cancel_and_retry_act_on_the_callers_message_when_both_keys_use_the_id(key_a, key_b):
    (a, client_a), (b, client_b) = key_a, key_b
    client_a.post("/messages", body("shared"))
    client_b.post("/messages", body("shared"))
    failed(a, "shared-failed")
    failed(b, "shared-failed")

    assert client_a.delete("/messages/shared").status_code == 200
    assert client_a.post("/messages/shared-failed/retry", {}, format="json").status_code == 200

    assert not Message.objects.filter(owner=a, message_id="shared").exists()
    assert Message.objects.filter(owner=b, message_id="shared").exists()
    assert Message.objects.get(owner=b, message_id="shared-failed").status == MessageStatus.FAILED
    assert Message.objects.get(owner=a, message_id="shared-failed").status == MessageStatus.SCHEDULED


def test_the_api_token_is_key_0_and_owns_its_messages_like_any_key(api, key_a):
    _, client_a = key_a
    assert api.post("/messages", body("by-token")).status_code == 200

    assert Message.objects.get(message_id="by-token").owner_id == API_TOKEN_KEY_ID
    assert ApiKey.objects.get(pk=API_TOKEN_KEY_ID).name == "API_TOKEN"
    assert client_a.get("/messages/by-token").status_code == 404
    assert {job["messageId"] for job in api.get("/messages").json()["scheduledJobs"]} == {"by-token"}


def test_a_read_only_key_reads_its_messages_and_changes_nothing():
    key, secret = create_api_key(name="dashboard", read_only=True)
    reader = client_with(secret)
    make_message(owner_id=key.pk, message_id="mine", due_at=timezone.now() + timedelta(days=1))
    failed(key, "mine-failed")

    assert reader.get("/messages").status_code == 200
    assert reader.get("/messages/mine").status_code == 200
    for response in (
        reader.post("/messages", body("new")),
        reader.delete("/messages/mine"),
        reader.post("/messages/mine-failed/retry", {}, format="json"),
    ):
        assert response.status_code == 403, response.content
        assert "read-only" in response.json()["detail"]
    assert set(Message.objects.filter(owner=key).values_list("message_id", "status")) == {
        ("mine", MessageStatus.SCHEDULED),
        ("mine-failed", MessageStatus.FAILED),
    }


def test_create_api_key_prints_the_secret_once_as_its_last_line():
    out, err = StringIO(), StringIO()

    call_command("create_api_key", "n8n on the VPS", "--read-only", stdout=out, stderr=err)

    secret = out.getvalue().strip().splitlines()[-1]
    key = ApiKey.objects.get(name="n8n on the VPS")
    assert key.read_only
    assert client_with(secret).get("/messages").status_code == 200
    assert client_with(secret).post("/messages", body("x")).status_code == 403
    assert secret not in err.getvalue()


def test_create_api_key_refuses_an_empty_name():
    with pytest.raises(CommandError):
        call_command("create_api_key", "  ", stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.exclude(pk=API_TOKEN_KEY_ID).exists()


# --- The admin -----------------------------------------------------------------------------

PASSWORD = "correct-horse-battery-staple-42"  # noqa: S105 - test users only
CHANGELIST = reverse("admin:scheduler_message_changelist")
KEYS = reverse("admin:scheduler_apikey_changelist")


def staff(username: str, *, groups: tuple[str, ...] = (), superuser: bool = False) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True, is_superuser=superuser)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


def test_ops_staff_see_every_keys_messages_with_their_owner_and_filter_by_it(client, key_a, key_b):
    (a, _), (b, _) = key_a, key_b
    make_message(owner_id=a.pk, message_id="from-a")
    make_message(owner_id=b.pk, message_id="from-b")
    client.force_login(staff("operator", groups=("ops",)))

    everything = client.get(CHANGELIST).content.decode()
    only_b = client.get(CHANGELIST, {"owner__id__exact": b.pk}).content.decode()

    assert "from-a" in everything
    assert "from-b" in everything
    assert "tenant A" in everything
    assert "tenant B" in everything
    assert "from-b" in only_b
    assert "from-a" not in only_b


def test_the_admin_search_finds_an_id_whatever_its_owner(client, key_a, key_b):
    (a, _), (b, _) = key_a, key_b
    make_message(owner_id=a.pk, message_id="twin")
    make_message(owner_id=b.pk, message_id="twin")
    make_message(owner_id=b.pk, message_id="other")
    client.force_login(staff("operator", groups=("ops",)))

    page = client.get(CHANGELIST, {"q": "twin"})

    assert sorted(message.owner_id for message in page.context["cl"].result_list) == sorted([a.pk, b.pk])


def test_admin_actions_act_on_the_selected_owners_message(client, key_a, key_b):
    (a, _), (b, _) = key_a, key_b
    mine = make_message(owner_id=a.pk, message_id="twin", due_at=timezone.now() + timedelta(days=1))
    make_message(owner_id=b.pk, message_id="twin", due_at=timezone.now() + timedelta(days=1))
    client.force_login(staff("operator", groups=("ops",)))

    client.post(CHANGELIST, {"action": "cancel", "_selected_action": [mine.pk], "index": 0}, follow=True)

    assert list(Message.objects.filter(message_id="twin").values_list("owner_id", flat=True)) == [b.pk]


def test_revoking_a_key_needs_the_revoke_permission(client, key_a):
    a, _ = key_a
    viewer = staff("viewer", groups=("ops",))
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_apikey", "change_apikey"]))
    client.force_login(viewer)

    client.post(KEYS, {"action": "revoke", "_selected_action": [a.pk], "index": 0}, follow=True)
    assert ApiKey.objects.get(pk=a.pk).revoked_at is None

    revoker = staff("revoker", superuser=True)
    client.force_login(revoker)
    client.post(KEYS, {"action": "revoke", "_selected_action": [a.pk], "index": 0}, follow=True)
    assert ApiKey.objects.get(pk=a.pk).revoked_at is not None


def test_the_api_token_row_is_not_revoked_from_the_admin(client):
    client.force_login(staff("root", superuser=True))

    response = client.post(KEYS, {"action": "revoke", "_selected_action": [API_TOKEN_KEY_ID], "index": 0}, follow=True)

    assert ApiKey.objects.get(pk=API_TOKEN_KEY_ID).revoked_at is None
    assert any("API_TOKEN" in str(message) for message in response.context["messages"])
    assert client_with(settings.API_TOKEN).get("/messages").status_code == 200


def test_a_new_keys_secret_travels_in_the_session_never_in_a_cookie(client):
    client.force_login(staff("root", superuser=True))

    response = client.post(reverse("admin:scheduler_apikey_add"), {"name": "zapier", "read_only": ""})
    assert response.status_code == 302
    assert "messages" not in response.cookies
    shown = client.get(response["Location"]).content.decode()

    secret = shown.split("not shown again: ")[1].split("<")[0].strip()
    assert secret.startswith("whs_")
    assert client_with(secret).get("/messages").status_code == 200
    assert secret not in client.get(response["Location"]).content.decode()  # shown once


@pytest.mark.django_db(transaction=True)
def test_migrating_to_a_target_before_tenancy_and_back_keeps_the_api_token_key():
    # post_migrate runs after each migrate: on the older schema it must use that schema's model
    call_command("migrate", "scheduler", "0004", verbosity=0)
    call_command("migrate", verbosity=0)

    assert ApiKey.objects.get(pk=API_TOKEN_KEY_ID).name == "API_TOKEN"


def test_ops_staff_cannot_read_url_credentials_back_through_search_or_lookups(client):
    make_message(message_id="secret-url", webhook_url="https://alice:hunter2@recv.example/hook")
    make_message(message_id="plain-url", webhook_url="https://recv.example/other")
    client.force_login(staff("operator", groups=("ops",)))

    def found(query: dict) -> set[str]:
        response = client.get(CHANGELIST, query)
        if response.status_code != 200 or "cl" not in (response.context or {}):
            return set()
        return {message.message_id for message in response.context["cl"].result_list}

    assert found({"q": "https://alice:h"}) == set()
    assert found({"q": "https://alice:x"}) == set()
    assert found({"q": "https://recv.example/"}) == {"plain-url"}
    assert found({"webhook_url__regex": "^https://alice:h"}) == found({"webhook_url__regex": "^https://alice:x"})
    assert found({"payload_json__contains": "n"}) == found({"payload_json__contains": "zzz"})
    assert found({"status__exact": "scheduled"}) == {"secret-url", "plain-url"}


def test_metrics_are_the_operators_not_another_tenants(api, key_a):
    _, client_a = key_a

    assert api.get("/metrics").status_code == 200
    refused = client_a.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["detail"]


@pytest.mark.django_db(transaction=True)  # the foreign key is checked when the insert commits
def test_an_insert_that_fails_for_another_reason_than_the_id_is_not_reported_as_taken():
    from django.db import IntegrityError

    from messages import scheduling

    with pytest.raises(IntegrityError):
        scheduling.schedule_message(
            owner_id=987654,
            new=scheduling.NewMessage(
                message_id="orphan",
                schedule_to=timezone.now() + timedelta(days=1),
                webhook_url="https://example.com/",
                payload_json="{}",
            ),
        )
