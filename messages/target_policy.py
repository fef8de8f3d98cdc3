"""Which webhook targets may be called: checked when a message is scheduled, and again at
connect time against the addresses the name resolves to then (so DNS cannot be used to slip
past the check between the two).

Link-local and cloud metadata addresses are never called. Private networks are allowed unless
WEBHOOK_BLOCK_PRIVATE_NETWORKS is on, because many users call n8n on their own network. An IPv6
address that carries an IPv4 address (mapped, 6to4, Teredo, NAT64...) is judged as that IPv4
address. Also here: the allowed ports, and whether an answer's excerpt may be kept.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Protocol

from django.conf import settings

IPAddress = IPv4Address | IPv6Address

ALWAYS_BLOCKED_NETWORKS = (
    ip_network("169.254.0.0/16"),  # link-local, where most clouds' metadata services answer
    ip_network("fe80::/10"),  # IPv6 link-local
    # AWS's IPv6 services: metadata (::254), EKS Pod Identity credentials (::23), DNS, NTP.
    ip_network("fd00:ec2::/32"),
    ip_network("fd20:ce::254/128"),  # Google Cloud metadata over IPv6
    ip_network("fd00:c1::a9fe:a9fe/128"),  # Oracle Cloud metadata over IPv6
    ip_network("fd00:a9fe:a9fe::1/128"),  # Akamai (Linode) metadata over IPv6
    ip_network("fd00:42::42/128"),  # Scaleway metadata over IPv6
    ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata (inside carrier-grade NAT space)
    ip_network("192.0.0.192/32"),  # Oracle Cloud Classic metadata
    # Azure's WireServer (VM agent, extension settings): public-looking, answers only inside Azure.
    ip_network("168.63.129.16/32"),
)
# Internal, but not `is_private` or `is_reserved` in Python 3.11 (0.0.0.0/8 and 198.18.0.0/15,
# benchmarking, already are). Documentation ranges Python misses (3fff::/20) are never routed.
EXTRA_INTERNAL_NETWORKS = (
    ip_network("100.64.0.0/10"),  # carrier-grade NAT: internal in clouds
    ip_network("192.0.0.0/24"),  # IETF protocol assignments; Python 3.11 knows only .0/29 and .170/31
    ip_network("fec0::/10"),  # deprecated IPv6 site-local, still found in older internal networks
)
# IPv6 ranges whose packets reach an IPv4 address written in the IPv6 one.
IPV4_COMPATIBLE = ip_network("::/96")  # deprecated ::a.b.c.d (but :: and ::1 are IPv6's own)
IPV4_TRANSLATED = ip_network("::ffff:0:0:0/96")  # SIIT's ::ffff:0:a.b.c.d
NAT64_WELL_KNOWN = ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ip_network("64:ff9b:1::/48")
# A local-use NAT64 prefix may have any RFC 6052 length from /48 on.
NAT64_LOCAL_PREFIX_LENGTHS = (48, 56, 64, 96)
DEFAULT_PORTS = {"http": 80, "https": 443}


class ParsedURL(Protocol):
    """What the port check reads: urllib's `urlsplit` result (port None when not written) or a yarl URL."""

    @property
    def scheme(self) -> str: ...

    @property
    def port(self) -> int | None: ...


class BlockedTarget(Exception):
    """The target is not allowed by the webhook target policy; calling it again will not help."""


def embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses the packets for `address` reach, if it carries one; else none."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return (address.teredo[1],)  # (server, client): the packets go to the client
    if address in NAT64_WELL_KNOWN:
        return (_rfc6052_ipv4(address, 96),)
    if address in NAT64_LOCAL_USE:
        return tuple(_rfc6052_ipv4(address, length) for length in NAT64_LOCAL_PREFIX_LENGTHS)
    if address in IPV4_TRANSLATED or (address in IPV4_COMPATIBLE and int(address) > 1):
        return (IPv4Address(int(address) & 0xFFFFFFFF),)
    return ()


def _rfc6052_ipv4(address: IPv6Address, prefix_length: int) -> IPv4Address:
    """RFC 6052: the IPv4 address follows the prefix, skipping bits 64-71 (the "u" octet)."""
    if prefix_length == 96:
        return IPv4Address(address.packed[12:])
    without_u_octet = address.packed[:8] + address.packed[9:]
    start = prefix_length // 8
    return IPv4Address(without_u_octet[start : start + 4])


def _judged_addresses(address: IPAddress) -> tuple[IPAddress, ...]:
    if not isinstance(address, IPv6Address):
        return (address,)
    if address in NAT64_LOCAL_USE:
        # Internal itself (a local network's translator; Python: reserved, private from 3.13), and
        # which reading of the IPv4 address is right is the operator's choice: all are judged.
        return (address, *embedded_ipv4(address))
    return embedded_ipv4(address) or (address,)


def _in_any(address: IPAddress, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    return any(address in network for network in networks)


def is_internal_address(address: IPAddress) -> bool:
    """Loopback, private, carrier-grade NAT, reserved, link-local, metadata...: what
    WEBHOOK_BLOCK_PRIVATE_NETWORKS refuses, judged on the IPv4 address an IPv6 one carries."""
    return any(
        judged.is_private
        or judged.is_loopback
        or judged.is_reserved
        or judged.is_multicast
        or judged.is_unspecified
        or judged.is_link_local
        or _in_any(judged, EXTRA_INTERNAL_NETWORKS)
        or _in_any(judged, ALWAYS_BLOCKED_NETWORKS)
        for judged in _judged_addresses(address)
    )


def address_block_reason(address: IPAddress) -> str | None:
    for judged in _judged_addresses(address):
        shown = str(address) if judged == address else f"{address} (carrying {judged})"
        if _in_any(judged, ALWAYS_BLOCKED_NETWORKS):
            return f"{shown} is a link-local or cloud metadata address"
        if settings.WEBHOOK_BLOCK_PRIVATE_NETWORKS and is_internal_address(judged):
            return f"{shown} is a private address (WEBHOOK_BLOCK_PRIVATE_NETWORKS)"
    return None


def port_block_reason(url: ParsedURL) -> str | None:
    """The allowed port list (WEBHOOK_ALLOWED_PORTS), on the port the URL is called on: its own
    or its scheme's."""
    allowed = settings.WEBHOOK_ALLOWED_PORTS
    if not allowed:
        return None
    port = url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme.lower())
    return None if port in allowed else f"port {port} is not in WEBHOOK_ALLOWED_PORTS"


def is_response_excerpt_kept(peer_address: str | None) -> bool:
    """Whether what the address a call connected to answered may be stored and shown: not from an
    internal one (a client could read any internal service that answers a POST), unless
    WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS says the operator accepts it. An unknown peer is internal."""
    if settings.WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS:
        return True
    try:
        address = ip_address((peer_address or "").split("%")[0])
    except ValueError:
        return False
    return not is_internal_address(address)


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
