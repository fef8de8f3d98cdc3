"""Which webhook targets may be called: checked when a message is scheduled, and again at
connect time against the addresses the name resolves to then (so DNS cannot be used to slip
past the check between the two).

Link-local and cloud metadata addresses are never called. Private networks are allowed unless
WEBHOOK_BLOCK_PRIVATE_NETWORKS is on, because many users call n8n on their own network.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from django.conf import settings

IPAddress = IPv4Address | IPv6Address

ALWAYS_BLOCKED_NETWORKS = (
    ip_network("169.254.0.0/16"),  # link-local, where cloud metadata services answer
    ip_network("fe80::/10"),  # IPv6 link-local
    ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)
SHARED_ADDRESS_SPACE = ip_network("100.64.0.0/10")  # carrier-grade NAT: internal in clouds


class BlockedTarget(Exception):
    """The target is not allowed by the webhook target policy; calling it again will not help."""


def _normalised(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_block_reason(address: IPAddress) -> str | None:
    address = _normalised(address)
    if any(address in network for network in ALWAYS_BLOCKED_NETWORKS):
        return f"{address} is a link-local or cloud metadata address"
    if not settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS:
        return None
    is_internal = (
        address.is_private or address.is_loopback or address.is_reserved or address.is_multicast
        or address.is_unspecified or address in SHARED_ADDRESS_SPACE
    )
    return f"{address} is a private address (WEBHOOK_BLOCK_PRIVATE_NETWORKS)" if is_internal else None


def host_block_reason(hostname: str) -> str | None:
    """The checks that need no DNS: the allowed host list, and literal IP addresses."""
    host = hostname.lower().rstrip(".")
    allowed = settings.WEBHOOK_ALLOWED_HOSTS
    if allowed and not any(_host_matches(host, pattern) for pattern in allowed):
        return f"{host} is not in WEBHOOK_ALLOWED_HOSTS"
    try:
        address = ip_address(host)
    except ValueError:
        return None
    return address_block_reason(address)


def _host_matches(host: str, pattern: str) -> bool:
    """`example.com` matches itself; `.example.com` matches it and every subdomain."""
    pattern = pattern.lower()
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def resolved_addresses_block_reason(host: str, addresses: list[str]) -> str | None:
    """The check at connect time, on the addresses `host` resolves to then: one refused refuses all."""
    for address in addresses:
        reason = address_block_reason(ip_address(address.split("%")[0]))
        if reason:
            return f"{host} resolves to {reason}"
    return None
