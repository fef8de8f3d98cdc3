"""API keys beside API_TOKEN: hashed, rotated without downtime, revoked, rate limited."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from messages.api_keys import create_api_key, hash_key, revoke_api_key
from messages.models import ApiKey

pytestmark = pytest.mark.django_db


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_an_api_key_works_beside_the_api_token(api):
    _, secret = create_api_key(name="n8n production")

    assert client_with(secret).get("/messages").status_code == 200
    assert api.get("/messages").status_code == 200


def test_only_a_hash_of_the_key_is_stored():
    key, secret = create_api_key(name="agent")

    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.key_hash == hash_key(secret)
    assert secret not in {stored.key_hash, stored.prefix, stored.name}


def test_keys_rotate_without_downtime_and_a_revoked_key_is_refused():
    old, old_secret = create_api_key(name="old")
    _, new_secret = create_api_key(name="new")
    assert client_with(old_secret).get("/messages").status_code == 200

    revoke_api_key(old)

    response = client_with(old_secret).get("/messages")
    assert response.status_code == 401
    assert response.json()["detail"]
    assert client_with(new_secret).get("/messages").status_code == 200


def test_last_use_is_recorded():
    key, secret = create_api_key(name="used")
    client_with(secret).get("/messages")
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


def test_a_request_over_the_rate_limit_gets_429_with_retry_after(settings, redis_server):
    redis_server.client().flushdb()
    settings.API_RATE_LIMIT = (3, 60.0)
    _, secret = create_api_key(name="limited")
    _, other_secret = create_api_key(name="other")
    client = client_with(secret)

    statuses = [client.get("/messages").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = client.get("/messages")
    assert 0 < int(response["Retry-After"]) <= 60
    assert response.json()["detail"]
    # Each key has its own budget
    assert client_with(other_secret).get("/messages").status_code == 200


def test_health_is_never_rate_limited(settings, redis_server, anonymous_api):
    settings.API_RATE_LIMIT = (1, 60.0)
    assert [anonymous_api.get("/health").status_code for _ in range(3)] == [200, 200, 200]


def test_the_admin_creates_a_key_shows_its_secret_once_and_revokes_it(client):
    admin_user = User.objects.create_superuser("root", "root@example.com", "a-long-password-1")
    client.force_login(admin_user)

    response = client.post("/admin/scheduler/apikey/add/", {"name": "zapier"}, follow=True)

    key = ApiKey.objects.get(name="zapier")
    page = response.content.decode()
    secret = page.split("it is not shown again: ")[1].split("<")[0].strip()
    assert hash_key(secret) == key.key_hash
    assert client_with(secret).get("/messages").status_code == 200

    client.post("/admin/scheduler/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert client_with(secret).get("/messages").status_code == 401
