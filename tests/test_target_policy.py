"""The webhook target policy: when scheduling, and again at connect time after DNS."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address

import pytest

from messages.models import Message
from messages.retry_policy import is_retryable
from messages.target_policy import address_block_reason, host_block_reason
from messages.webhook_client import send_webhook

pytestmark = pytest.mark.django_db


def post(api, url: str):
    return api.post("/messages", {"id": "target", "scheduleTo": datetime.now(UTC).isoformat(),
                                  "payload": {}, "webhookUrl": url})


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/", "http://[fe80::1]/",
            "http://169.254.1.1:8080/x", "http://[::ffff:169.254.169.254]/"],
)
def test_link_local_and_metadata_addresses_are_refused_whatever_the_settings(api, url):
    response = post(api, url)
    assert response.status_code == 400
    assert "not allowed" in response.json()["errors"]["webhookUrl"][0]
    assert not Message.objects.exists()


@pytest.mark.parametrize("url", ["http://10.0.0.5:5678/webhook", "http://192.168.1.10/", "http://127.0.0.1:9/x"])
def test_private_networks_are_allowed_by_default(api, url):
    assert post(api, url).status_code == 200


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:5678/webhook", "http://127.0.0.1/", "http://[::1]/", "http://100.64.0.1/",
            "http://0.0.0.0/", "http://172.16.0.1/"],
)
def test_private_networks_are_refused_when_blocked(api, settings, url):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = True
    assert post(api, url).status_code == 400


def test_only_allowed_hosts_may_be_called(api, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com", ".n8n.internal"]

    assert post(api, "https://hooks.example.com/a").status_code == 200
    Message.objects.all().delete()
    assert post(api, "https://eu.n8n.internal/a").status_code == 200
    Message.objects.all().delete()
    assert post(api, "https://n8n.internal/a").status_code == 200
    Message.objects.all().delete()
    assert post(api, "https://evil.example.com/a").status_code == 400
    assert post(api, "https://hooks.example.com.evil.org/a").status_code == 400


def test_a_name_that_resolves_to_a_blocked_address_fails_the_attempt_for_good(settings, receiver, hook_path):
    # Given private networks blocked, and a name ("localhost") that resolves to loopback only at send time
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = True
    port = receiver.base_url.rsplit(":", 1)[1]

    result = send_webhook(url=f"http://localhost:{port}{hook_path}", body=b"{}", message_id="m", timeout_seconds=2)

    assert result.error == "BlockedTarget"
    assert not is_retryable(result)
    assert receiver.calls_to(hook_path) == []


def test_an_allowed_target_is_called_through_the_checked_connection(receiver, hook_path):
    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)
    assert result.status_code == 200
    assert len(receiver.calls_to(hook_path)) == 1


def test_ipv4_mapped_ipv6_addresses_are_judged_as_ipv4():
    assert address_block_reason(ip_address("::ffff:169.254.169.254"))
    assert host_block_reason("::ffff:169.254.169.254")
