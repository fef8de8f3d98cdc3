"""The webhook target policy: when scheduling, and again at connect time after DNS."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ImproperlyConfigured
from yarl import URL

from messages import webhook_client
from messages.models import Message
from messages.retry_policy import is_retryable
from messages.target_policy import address_block_reason, host_block_reason, is_response_excerpt_kept, port_block_reason
from messages.webhook_client import send_webhook
from scheduler_project.settings import _ports_from_env
from tests.support.receiver import Reply

pytestmark = pytest.mark.django_db


def post(api, url: str):
    return api.post("/messages", {"id": "target", "scheduleTo": datetime.now(UTC).isoformat(), "payload": {}, "webhookUrl": url})


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://169.254.1.1:8080/x",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd20:ce::254]/",
        "http://100.100.100.200/latest/meta-data",
        "http://[2002:a9fe:a9fe::]/",
    ],
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
    "url",
    [
        "http://10.0.0.5:5678/webhook",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://172.16.0.1/",
    ],
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


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("fd20:ce::254", id="gcp-ipv6"),
        pytest.param("100.100.100.200", id="alibaba"),
        pytest.param("192.0.0.192", id="oracle-classic"),
        pytest.param("fd00:c1::a9fe:a9fe", id="oracle-ipv6"),
        pytest.param("168.63.129.16", id="azure-wireserver"),
        pytest.param("fd00:a9fe:a9fe::1", id="akamai-ipv6"),
        pytest.param("fd00:42::42", id="scaleway-ipv6"),
        pytest.param("fd00:ec2::23", id="aws-eks-pod-identity-ipv6"),
    ],
)
def test_cloud_metadata_addresses_are_refused_even_with_private_networks_allowed(settings, address):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = False
    reason = address_block_reason(ip_address(address))
    assert reason is not None
    assert "metadata" in reason


# Every one of these carries 169.254.169.254.
@pytest.mark.parametrize(
    "address",
    [
        pytest.param("::a9fe:a9fe", id="ipv4-compatible"),
        pytest.param("::ffff:0:a9fe:a9fe", id="ipv4-translated"),
        pytest.param("2002:a9fe:a9fe::", id="6to4"),
        pytest.param("2001:0:4136:e378:8000:63bf:5601:5601", id="teredo-client"),
        pytest.param("64:ff9b::a9fe:a9fe", id="nat64-well-known"),
        pytest.param("64:ff9b:1::a9fe:a9fe", id="nat64-local-use-96"),
        pytest.param("64:ff9b:1:a9fe:a9:fe00::", id="nat64-local-use-48"),
    ],
)
def test_ipv4_embedded_in_ipv6_is_judged_as_the_ipv4_address(settings, address):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = False
    reason = address_block_reason(ip_address(address))
    assert reason is not None
    assert "carrying 169.254.169.254" in reason
    assert host_block_reason(address)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("2002:a00:1::", id="6to4-of-10.0.0.1"),
        pytest.param("64:ff9b::a00:1", id="nat64-of-10.0.0.1"),
        pytest.param("2001:0:4136:e378:8000:63bf:f5ff:fffe", id="teredo-client-10.0.0.1"),
        # The local-use prefix is a local network's own translator, whatever it carries.
        pytest.param("64:ff9b:1::808:808", id="nat64-local-use"),
        pytest.param("fec0::1", id="ipv6-site-local"),
        pytest.param("192.0.0.100", id="ietf-protocol-assignments"),
        # Python counts these as private already; kept here as the decision they are.
        pytest.param("198.18.0.1", id="benchmarking"),
        pytest.param("0.1.2.3", id="this-network"),
    ],
)
def test_more_internal_addresses_are_refused_when_private_networks_are_blocked(settings, address):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = True
    reason = address_block_reason(ip_address(address))
    assert reason is not None
    assert "private" in reason


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("64:ff9b::808:808", id="nat64-of-8.8.8.8"),  # what DNS64 answers in an IPv6-only network
        pytest.param("2002:808:808::1", id="6to4-of-8.8.8.8"),
        pytest.param("2001:0:4136:e378:8000:63bf:f7f7:f7f7", id="teredo-client-8.8.8.8"),
    ],
)
def test_ipv6_carrying_a_public_ipv4_address_is_allowed_when_private_networks_are_blocked(settings, address):
    settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS = True
    assert address_block_reason(ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/a", True),
        ("https://hooks.example.com:443/a", True),
        ("http://hooks.example.com:8443/a", True),
        ("http://hooks.example.com/a", False),  # port 80, from the scheme
        ("https://hooks.example.com:8080/a", False),
    ],
)
def test_the_port_list_judges_the_port_a_url_is_called_on(settings, url, allowed):
    settings.WEBHOOK_ALLOWED_PORTS = frozenset({443, 8443})
    # urllib's parse at POST, yarl's at send time
    assert (port_block_reason(urlsplit(url)) is None) is allowed
    assert (port_block_reason(URL(url)) is None) is allowed


def test_any_port_is_allowed_when_the_port_list_is_empty(settings):
    settings.WEBHOOK_ALLOWED_PORTS = frozenset()
    assert port_block_reason(urlsplit("http://hooks.example.com:6379/")) is None


def test_a_port_outside_the_list_is_refused_at_post(api, settings):
    settings.WEBHOOK_ALLOWED_PORTS = frozenset({443})

    refused = post(api, "https://hooks.example.com:8443/a")
    assert refused.status_code == 400
    assert "WEBHOOK_ALLOWED_PORTS" in refused.json()["errors"]["webhookUrl"][0]
    assert post(api, "http://hooks.example.com/a").status_code == 400
    assert not Message.objects.exists()
    assert post(api, "https://hooks.example.com/a").status_code == 200


def test_a_message_stored_before_the_port_list_changed_fails_for_good_at_send_time(settings, receiver, hook_path):
    # Given a message accepted when any port was allowed, and a port list that no longer has its port
    settings.WEBHOOK_ALLOWED_PORTS = frozenset({443})

    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)

    assert result.error == "BlockedTarget"
    assert not is_retryable(result)
    assert receiver.calls_to(hook_path) == []


def test_a_listed_port_is_called_at_send_time(settings, receiver, hook_path):
    settings.WEBHOOK_ALLOWED_PORTS = frozenset({URL(receiver.base_url).port})
    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)
    assert result.status_code == 200


@pytest.mark.parametrize(
    ("text", "ports"),
    [("", frozenset()), ("443, 8443", frozenset({443, 8443})), ("1,65535", frozenset({1, 65535}))],
)
def test_the_port_list_is_read_from_the_environment(monkeypatch, text, ports):
    monkeypatch.setenv("WEBHOOK_ALLOWED_PORTS", text)
    assert _ports_from_env() == ports


@pytest.mark.parametrize("text", ["0", "65536", "https", "-1", "80;443", "8_0", "²"])
def test_a_bad_port_list_stops_the_start(monkeypatch, text):
    monkeypatch.setenv("WEBHOOK_ALLOWED_PORTS", text)
    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_ALLOWED_PORTS"):
        _ports_from_env()


@pytest.mark.parametrize(
    ("peer", "kept"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("10.0.0.5", False),
        ("100.64.0.1", False),
        ("fd12::1", False),
        ("169.254.169.254", False),
        ("fe80::1%2", False),
        ("::ffff:192.168.1.1", False),
        ("fec0::1", False),
        (None, False),
        ("", False),  # a peer the connection did not tell
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),
    ],
)
def test_only_an_answer_from_outside_private_networks_keeps_its_excerpt_by_default(settings, peer, kept):
    settings.WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS = False
    assert is_response_excerpt_kept(peer) is kept


def test_the_operator_may_keep_the_excerpts_of_internal_answers(settings):
    settings.WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS = True
    assert is_response_excerpt_kept("127.0.0.1")


def test_a_call_answered_on_loopback_stores_no_excerpt_by_default(monkeypatch, settings, receiver, hook_path):
    # Given the default, and a small answer (aiohttp has released the connection before the body is read)
    settings.WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS = False
    receiver.reply(hook_path, Reply(status=500, body=b"internal secrets"))
    peers = []

    def spy(peer: str | None) -> bool:
        peers.append(peer)
        return is_response_excerpt_kept(peer)

    monkeypatch.setattr(webhook_client, "is_response_excerpt_kept", spy)

    result = send_webhook(url=receiver.url(hook_path), body=b"{}", message_id="m", timeout_seconds=2)

    assert result.status_code == 500
    assert result.response_excerpt == ""
    # The peer is learnt from aiohttp's connection: this fails if aiohttp stops handing it to the response
    assert peers == ["127.0.0.1"]
