"""A hostile HTTP receiver on 127.0.0.1: real sockets answering the ways a webhook client must survive.

The first segment of a request's path picks the behaviour (`/reset/<anything>` resets the
connection); the rest of the path is free, so each test calls its own suffix. Every request is
recorded, whatever the behaviour, once its body has been read and before it is answered.

Built on asyncio streams rather than http.server because http.server cannot write a broken answer:
a Retry-After of raw bytes, a TCP reset half-way through a response, a body that never ends. One
event loop in a daemon thread serves hundreds of connections; stop() closes every one of them.

    /ok/...            200 "ok" (keep-alive)
    /retry-after/...   503 (or configure(status=)) with Retry-After: <configure(retry_after=) verbatim>
    /nul-body/...      500 whose body is full of NUL bytes
    /bad-utf8/...      500 whose body is invalid UTF-8 although it says charset=utf-8
    /huge-headers/...  200 with a 64 KiB header and 200 more of 100 bytes
    /slow-body/...     200, Content-Length 1000, then one byte per second (configure(delay=))
    /hang/...          reads the request and never answers
    /reset/...         the status line, the headers and 10 of 1000 body bytes, then a TCP RST
    /set-cookie/...    200 with Set-Cookie: session=<path>; Path=/
    /redirect/...      302 to <base_url>/ok/redirected-<suffix>
    /slow-ok/...       200 "ok" after configure(delay=) seconds, each request on its own clock (keep-alive)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from tests.support.recorded_calls import RecordedCalls

MAX_HEAD = 1 << 20  # a request's line and headers; clients' limits are under test, not ours
BACKLOG = 1024  # hundreds of connections may arrive at once
RESET_BODY_BYTES = 10  # of the 1000 announced: the client is reading the body when the reset hits


@dataclass(frozen=True)
class Call:
    path: str  # without the query string
    headers: dict[str, str]  # names spelled as the client sent them
    body: bytes
    arrived_at: float  # time.time(), once the whole body had arrived
    method: str = "POST"
    query: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Options:
    status: int | None = None  # None: the behaviour's own status
    retry_after: bytes = b"1"  # written verbatim, b"" included
    delay: float = 1.0  # /slow-ok: before the answer; /slow-body: between two bytes


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        """The header's value whatever its case; "" when absent."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), "")

    @property
    def keeps_alive(self) -> bool:
        if self.version == "HTTP/1.0":
            return self.header("Connection").lower() == "keep-alive"
        return self.header("Connection").lower() != "close"


@dataclass(frozen=True)
class _Exchange:
    request: _Request
    options: Options
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    base_url: str

    def status(self, default: int) -> int:
        return self.options.status if self.options.status is not None else default

    @property
    def suffix(self) -> str:
        """The path after its first segment: /redirect/abc -> abc."""
        return self.request.path.split("/", 2)[2] if self.request.path.count("/") >= 2 else ""


class _BadRequest(Exception):
    pass


Behaviour = Callable[[_Exchange], Awaitable[bool]]  # returns whether the connection may serve another request


class HostileReceiver(RecordedCalls[Call]):
    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self._options: dict[str, Options] = {}
        self._open_connections = 0
        # Bound now, so base_url is known before start() and connections queue until the loop serves them.
        self._socket = socket.create_server(("127.0.0.1", port), backlog=BACKLOG)
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"hostile-receiver-{self.port}")
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise RuntimeError("the hostile receiver's event loop did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)
        self._socket.close()

    def configure(
        self, path: str, *, status: int | None = None, retry_after: bytes | None = None, delay: float | None = None
    ) -> None:
        """Sets how `path` (without its query string) answers; options left out keep their value."""
        changes: dict[str, Any] = {"status": status, "retry_after": retry_after, "delay": delay}
        with self._changed:
            current = self._options.get(path, Options())
            self._options[path] = dataclasses.replace(current, **{k: v for k, v in changes.items() if v is not None})

    @property
    def open_connections(self) -> int:
        """Client connections open right now, so a test can check a client hung up."""
        with self._changed:
            return self._open_connections

    def wait_for_open_connections(self, at_most: int, timeout: float) -> int:
        """Waits until no more than `at_most` client connections are open; returns how many are."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._open_connections > at_most and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return self._open_connections

    def _options_for(self, path: str) -> Options:
        with self._changed:
            return self._options.get(path, Options())

    def _count_connection(self, change: int) -> None:
        with self._changed:
            self._open_connections += change
            self._changed.notify_all()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_HEAD, backlog=BACKLOG)
        self._started.set()
        await self._stopping.wait()
        server.close()
        # Python 3.11's wait_closed() does not wait for the connections: close them ourselves.
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self._count_connection(+1)
        try:
            await self._exchanges(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up or gave up: it may, that is what the tests look at
        except asyncio.CancelledError:
            pass  # stop(): ending quietly, as asyncio's stream callback logs a cancelled task as an error
        finally:
            del self._connections[task]
            writer.close()
            self._count_connection(-1)

    async def _exchanges(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await _read_request(reader, writer)
            except _BadRequest:
                writer.write(_head(400, [(b"Connection", b"close")], body_length=0))
                await writer.drain()
                return
            if request is None:
                return  # closed between two requests
            self._record(Call(request.path, request.headers, request.body, time.time(), method=request.method, query=request.query))
            exchange = _Exchange(request, self._options_for(request.path), reader, writer, self.base_url)
            behaviour = BEHAVIOURS.get(_first_segment(request.path), _unknown)
            if not await behaviour(exchange):
                return


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
    """Reads one whole request, body included; None when the client closed before sending one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(lines[0]) from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise _BadRequest(line)
        # A repeated header joins its values, as RFC 9110 allows for lists.
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    path, _, query = target.partition("?")
    request = _Request(method, path, query, version, headers, b"")
    if request.header("Expect").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return dataclasses.replace(request, body=await _read_body(reader, request))


async def _read_body(reader: asyncio.StreamReader, request: _Request) -> bytes:
    if "chunked" in request.header("Transfer-Encoding").lower():
        return await _read_chunked(reader)
    try:
        length = int(request.header("Content-Length") or 0)
    except ValueError:
        raise _BadRequest(request.header("Content-Length")) from None
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise _BadRequest(size_line) from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers: nothing here reads them
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _first_segment(path: str) -> str:
    """/retry-after/abc -> "retry-after"; "" when the path does not start with "/" (`*`, an absolute URL)."""
    parts = path.split("/", 2)
    return parts[1] if len(parts) > 1 and parts[0] == "" else ""


def _head(status: int, headers: list[tuple[bytes, bytes]], *, body_length: int | None) -> bytes:
    """A response's status line and headers, written as given: nothing is checked or escaped."""
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b"Whatever"
    if body_length is not None:
        headers = [(b"Content-Length", str(body_length).encode()), *headers]
    lines = [b"HTTP/1.1 %d %s" % (status, reason), *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _answer(
    exchange: _Exchange, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, *, keep_alive: bool = False
) -> bool:
    keep_alive = keep_alive and exchange.request.keeps_alive
    headers = [*(headers or []), (b"Connection", b"keep-alive" if keep_alive else b"close")]
    exchange.writer.write(_head(status, headers, body_length=len(body)) + body)
    await exchange.writer.drain()
    return keep_alive


async def _client_left(reader: asyncio.StreamReader, within: float | None) -> bool:
    """Whether the client closed its side within `within` seconds (None: however long it takes)."""
    try:
        data = await asyncio.wait_for(reader.read(65536), within)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""  # anything else it sent is dropped: nobody will answer it


async def _ok(exchange: _Exchange) -> bool:
    return await _answer(exchange, exchange.status(200), b"ok", keep_alive=True)


async def _retry_after(exchange: _Exchange) -> bool:
    return await _answer(exchange, exchange.status(503), b"busy", [(b"Retry-After", exchange.options.retry_after)])


async def _nul_body(exchange: _Exchange) -> bool:
    return await _answer(exchange, exchange.status(500), b"err\x00or\x00" * 100, [(b"Content-Type", b"text/plain")])


async def _bad_utf8(exchange: _Exchange) -> bool:
    headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
    return await _answer(exchange, exchange.status(500), b"\xff\xfe\xc3\x28" * 256, headers)


async def _huge_headers(exchange: _Exchange) -> bool:
    headers = [(b"X-Huge", b"h" * 65536), *((b"X-Filler-%03d" % i, b"f" * 100) for i in range(200))]
    return await _answer(exchange, exchange.status(200), b"ok", headers)


async def _slow_body(exchange: _Exchange) -> bool:
    headers = [(b"Content-Type", b"text/plain"), (b"Connection", b"close")]
    exchange.writer.write(_head(exchange.status(200), headers, body_length=1000))
    for _ in range(1000):
        exchange.writer.write(b"x")
        await exchange.writer.drain()
        if await _client_left(exchange.reader, within=exchange.options.delay):
            break
    return False


async def _hang(exchange: _Exchange) -> bool:
    await _client_left(exchange.reader, within=None)
    return False


async def _reset(exchange: _Exchange) -> bool:
    headers = [(b"Content-Type", b"text/plain"), (b"Connection", b"close")]
    exchange.writer.write(_head(exchange.status(200), headers, body_length=1000) + b"r" * RESET_BODY_BYTES)
    await exchange.writer.drain()
    await asyncio.sleep(0.05)  # the start of the answer reaches the client before the reset does
    # Linger 0: close() sends an RST instead of a FIN, the way a crashed or killed receiver looks.
    exchange.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    exchange.writer.transport.abort()
    return False


async def _set_cookie(exchange: _Exchange) -> bool:
    cookie = b"session=" + exchange.request.path.encode("latin-1") + b"; Path=/"
    return await _answer(exchange, exchange.status(200), b"ok", [(b"Set-Cookie", cookie)])


async def _redirect(exchange: _Exchange) -> bool:
    location = f"{exchange.base_url}/ok/redirected-{exchange.suffix}".encode("latin-1")
    return await _answer(exchange, exchange.status(302), b"", [(b"Location", location)])


async def _slow_ok(exchange: _Exchange) -> bool:
    await asyncio.sleep(exchange.options.delay)  # on the loop: other requests go on meanwhile
    return await _answer(exchange, exchange.status(200), b"ok", keep_alive=True)


async def _unknown(exchange: _Exchange) -> bool:
    return await _answer(exchange, exchange.status(404), b"no such behaviour")


BEHAVIOURS: dict[str, Behaviour] = {
    "ok": _ok,
    "retry-after": _retry_after,
    "nul-body": _nul_body,
    "bad-utf8": _bad_utf8,
    "huge-headers": _huge_headers,
    "slow-body": _slow_body,
    "hang": _hang,
    "reset": _reset,
    "set-cookie": _set_cookie,
    "redirect": _redirect,
    "slow-ok": _slow_ok,
}
