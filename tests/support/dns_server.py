"""A tiny UDP name server on 127.0.0.1 for the resolver's tests: fixed answers, NXDOMAIN, or silence.

Packets are read and written with dnslib: hand-written wire code would be longer than this whole
file once compressed names and the EDNS record c-ares adds are handled, and easier to get wrong.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, ip_address
from types import TracebackType

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord

POLL_SECONDS = 0.05  # how often the serving thread looks whether it should stop

# The names the test session's workers ask about (conftest's dns_server): one that resolves to
# 127.0.0.1, one whose name server never answers.
RESOLVING_NAME = "ok.hostile.test"
SILENT_NAME = "silent.test"


def _normalised(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """`answers` maps a name to an address, or several ("::1" answers AAAA queries); any other
    name is NXDOMAIN, except names in `silent` and their subdomains, which are never answered.
    A known name with no address of the asked type gets an empty NOERROR answer."""

    def __init__(self, answers: Mapping[str, str | Iterable[str]] | None = None, silent: Iterable[str] = ()) -> None:
        self._answers = {_normalised(name): _addresses(value) for name, value in (answers or {}).items()}
        self._silent = {_normalised(name) for name in silent}
        self._queries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(POLL_SECONDS)
        self._thread = threading.Thread(target=self._serve, name="test-dns-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def address(self) -> str:
        """The "ip:port" form WEBHOOK_DNS_SERVERS takes."""
        return f"127.0.0.1:{self.port}"

    def queries(self, name: str) -> int:
        """How many queries (of any type) have arrived for exactly this name."""
        with self._lock:
            return self._queries[_normalised(name)]

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._socket.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                packet, client = self._socket.recvfrom(4096)
                reply = self._reply(packet)
                if reply is not None:
                    self._socket.sendto(reply, client)
            except TimeoutError:
                continue
            except Exception:  # noqa: S112 - one bad exchange must not end the session's name server
                continue

    def _reply(self, packet: bytes) -> bytes | None:
        try:
            request = DNSRecord.parse(packet)
        except DNSError:
            return None  # a stray packet must not end the server
        name = _normalised(str(request.q.qname))
        with self._lock:
            self._queries[name] += 1
        if self._is_silent(name):
            return None
        reply = request.reply()
        if name not in self._answers:
            reply.header.rcode = RCODE.NXDOMAIN
        for address in self._answers.get(name, []):
            record = _record(address, request.q.qtype)
            if record is not None:
                # TTL 0: c-ares' own cache keeps nothing, so every lookup that leaves it is counted.
                reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=record, ttl=0))
        return reply.pack()

    def _is_silent(self, name: str) -> bool:
        return any(name == silent or name.endswith("." + silent) for silent in self._silent)


def _addresses(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _record(address: str, qtype: int) -> A | AAAA | None:
    """The answer record for `address` if it is of the asked type."""
    is_ipv6 = isinstance(ip_address(address), IPv6Address)
    if qtype == QTYPE.AAAA and is_ipv6:
        return AAAA(address)
    if qtype == QTYPE.A and not is_ipv6:
        return A(address)
    return None
