"""Per-address limits on what anyone may send without a valid token: failed API authentications,
requests to the public endpoints, failed admin logins. A middleware; counts in rate_windows.

The address is REMOTE_ADDR. Behind a proxy that is the proxy's, one address for every client: set
TRUSTED_PROXY_COUNT to the number of proxies that append to X-Forwarded-For, and the address is
the one the outermost of them saw. An IPv6 address counts as its /64, which one host owns.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.crypto import constant_time_compare

from messages import rate_windows
from messages.api.responses import error_body

logger = logging.getLogger(__name__)

# URL names of the endpoints anyone may call (messages/api/urls.py).
PUBLIC_URL_NAMES = frozenset({"health", "livez", "readyz", "openapi-schema", "docs"})
# Counted in this process only: liveness must never wait on Redis (an outage would fail every
# web process's probe and have them all restarted), and an answer that reads nothing costs too
# little to be worth a shared count.
IN_PROCESS_URL_NAMES = frozenset({"livez"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FailureLimit:
    """Failures counted after the answer, checked with one GET before the view runs."""

    name: str
    setting: str
    is_failure: Callable[[HttpResponse], bool]
    over_limit: Callable[[int], HttpResponse]
    # A request that is never refused, nor counted: what it carries is checked without a query.
    is_exempt: Callable[[HttpRequest], bool] = lambda request: False


def _json_refusal(status: int, detail: str, retry_after: int) -> HttpResponse:
    response = JsonResponse(error_body(detail), status=status)
    response["Retry-After"] = str(retry_after)
    return response


def _plain_refusal(status: int, text: str, retry_after: int) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    return response


def carries_the_api_token(request: HttpRequest) -> bool:
    """The Authorization header is `Bearer <API_TOKEN>`, as BearerTokenAuthentication reads it.

    So that wrong tokens sent from a proxy's or a NAT's address, which many clients share, never
    lock the operator out. API keys get no such pass: telling a valid one from a guess takes the
    hash and the query that refusing a blocked address before the view exists to save.
    """
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    token = token.strip()
    return bool(settings.API_TOKEN and token and scheme.lower() == "bearer" and constant_time_compare(token, settings.API_TOKEN))


FAILED_API_AUTH = FailureLimit(
    name="failed-auth",
    setting="API_FAILED_AUTH_LIMIT",
    is_failure=lambda response: response.status_code == 401,
    over_limit=lambda wait: _json_refusal(
        429, f"Too many failed authentications from this address; retry in {wait} seconds.", wait
    ),
    is_exempt=carries_the_api_token,
)
FAILED_ADMIN_LOGIN = FailureLimit(
    name="admin-login",
    setting="ADMIN_LOGIN_FAILURE_LIMIT",
    # The login view redirects on success and shows the form again on a failure.
    is_failure=lambda response: response.status_code not in REDIRECT_STATUSES,
    over_limit=lambda wait: _plain_refusal(429, f"Too many failed logins from this address. Try again in {wait} seconds.\n", wait),
)


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR; with TRUSTED_PROXY_COUNT proxies in front, the address the outermost one saw.

    IPv6 addresses as their /64. An X-Forwarded-For entry that is not an IP address counts as
    REMOTE_ADDR: any text would otherwise be an address of its own, a fresh budget each.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    remote_ip = _ip_of(remote)
    fallback = remote if remote_ip is None else _counted_as(remote_ip)
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not (proxies and forwarded):
        return fallback
    # Each proxy appends the address it got the request from: the ones left of those are the client's to forge.
    forwarded_ip = _ip_of(forwarded[-min(proxies, len(forwarded))])
    return fallback if forwarded_ip is None else _counted_as(forwarded_ip)


def _ip_of(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in "192.0.2.1", "192.0.2.1:443", "2001:db8::1" or "[2001:db8::1]:443"; None for anything else."""
    host = entry.strip()
    if host.startswith("["):
        host, closed, port = host[1:].partition("]")
        if not closed or not (port == "" or (port[:1] == ":" and port[1:].isdigit())):
            return None
    elif host.count(":") == 1:  # an IPv4 address and a port (an IPv6 address has two colons or more)
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _counted_as(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack socket's view of an IPv4 client
            return str(ip.ipv4_mapped)
        # One host gets a whole /64 (SLAAC, privacy addresses): per address, it would have 2^64 budgets.
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class AddressLimitMiddleware:
    """Goes after SecurityMiddleware and WhiteNoise, before the session and authentication."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)  # a 404 costs nothing and authenticates no one
        address = client_address(request)
        if match.url_name in PUBLIC_URL_NAMES and not match.namespace:
            return self._count_public(request, address, match.url_name)
        if match.namespace == "admin":
            if match.url_name == "login" and request.method == "POST":
                return self._guard(request, address, FAILED_ADMIN_LOGIN)
            return self.get_response(request)
        return self._guard(request, address, FAILED_API_AUTH)

    def _count_public(self, request: HttpRequest, address: str, url_name: str) -> HttpResponse:
        # Every request counts, with a token or not: these views never check one, so an
        # exemption for an Authorization header would exempt anyone who sends one.
        rate = settings.API_PUBLIC_RATE_LIMIT
        if rate is None:
            return self.get_response(request)
        identity = f"public:{address}"
        if url_name in IN_PROCESS_URL_NAMES:
            counted = rate_windows.in_process_counts.count_request(identity, rate)
        else:
            try:
                counted = rate_windows.count_request(identity, rate)
            except rate_windows.CountUnavailable:
                # Never refused for Redis, whatever RATE_LIMIT_ON_REDIS_ERROR says: /health and
                # /readyz must be able to say that Redis is down. Each process counts on its own.
                counted = rate_windows.in_process_counts.count_request(identity, rate)
        if counted.count > rate[0]:
            if counted.count == rate[0] + 1:
                logger.warning("public endpoints: %s over API_PUBLIC_RATE_LIMIT for %d s", address, counted.retry_after)
            return _json_refusal(
                429, f"Too many requests from this address; retry in {counted.retry_after} seconds.", counted.retry_after
            )
        return self.get_response(request)

    def _guard(self, request: HttpRequest, address: str, limit: FailureLimit) -> HttpResponse:
        rate = getattr(settings, limit.setting)
        if rate is None or limit.is_exempt(request):
            return self.get_response(request)
        identity = f"{limit.name}:{address}"
        try:
            seen = rate_windows.current_count(identity, rate)
        except rate_windows.CountUnavailable:
            # Never refused for Redis, never let through uncounted: while Redis is away each
            # process counts failures on its own, so a valid token still works (the database,
            # not Redis, is what the API needs) and a guesser still meets a limit.
            seen = rate_windows.in_process_counts.current_count(identity, rate)
        if seen.count >= rate[0]:
            # Before the view: a blocked address costs this one GET, no token hash, no query.
            return limit.over_limit(seen.retry_after)
        response = self.get_response(request)
        if limit.is_failure(response):
            self._count_failure(identity, rate, limit, address)
        return response

    def _count_failure(self, identity: str, rate: rate_windows.Rate, limit: FailureLimit, address: str) -> None:
        try:
            counted = rate_windows.count_request(identity, rate)
        except rate_windows.CountUnavailable:
            counted = rate_windows.in_process_counts.count_request(identity, rate)
        if counted.count == rate[0]:
            logger.warning("%s: %s blocked for %d s after %d failures", limit.name, address, counted.retry_after, rate[0])
