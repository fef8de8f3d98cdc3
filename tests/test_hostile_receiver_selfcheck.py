"""The hostile receiver does what each of its behaviours says, seen from raw sockets and http.client.

No database and no Celery: these tests check the test tool, so the end-to-end tests built on it
can trust that a failure is the webhook client's and not the receiver's.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.hostile_receiver import HostileReceiver


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileReceiver]:
    server = HostileReceiver()
    server.start()
    yield server
    server.stop()


def unique(behaviour: str) -> str:
    return f"/{behaviour}/{uuid.uuid4().hex}"


def connect(receiver: HostileReceiver, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", receiver.port), timeout=timeout)


def post(sock: socket.socket, path: str, body: bytes = b"{}", *, extra: bytes = b"") -> None:
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body))


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response's status line and headers, and whatever of the body came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the end of the headers: {data[:200]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_until_closed(sock: socket.socket) -> tuple[bytes, OSError | None]:
    """All the socket received until it closed, and the error it closed with (None: a FIN)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as error:
        return data, error
    return data, None


def client(receiver: HostileReceiver, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout)


def test_ok_keeps_the_connection_alive_and_records_each_call(hostile: HostileReceiver) -> None:
    path = unique("ok")
    connection = client(hostile)
    before = time.time()
    for body in (b'{"n": 1}', b'{"n": 2}'):
        connection.request("POST", f"{path}?value=1", body=body, headers={"X-Weird-CASE": "yes"})
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"ok")
    sock = connection.sock
    connection.request("POST", path, body=b"")
    assert connection.getresponse().read() == b"ok"
    assert connection.sock is sock, "a second connection was opened: keep-alive did not hold"
    connection.close()

    calls = hostile.wait_for_calls(path, 3, timeout=5)
    assert [call.body for call in calls] == [b'{"n": 1}', b'{"n": 2}', b""]
    assert calls[0].headers["X-Weird-CASE"] == "yes"
    assert calls[0].query == "value=1"
    assert calls[0].json == {"n": 1}
    assert before <= calls[0].arrived_at <= calls[2].arrived_at <= time.time()


def test_wait_for_calls_returns_what_arrived_by_the_deadline(hostile: HostileReceiver) -> None:
    started = time.monotonic()
    assert hostile.wait_for_calls(unique("ok"), 1, timeout=0.2) == []
    assert 0.2 <= time.monotonic() - started < 1


def test_a_chunked_request_body_is_read_whole(hostile: HostileReceiver) -> None:
    path = unique("ok")
    with connect(hostile) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" % path.encode()
        )
        head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert hostile.wait_for_calls(path, 1, timeout=5)[0].body == b"abcde"


RETRY_AFTER_VALUES = [
    "²".encode(),
    b"99999999999999999999999",
    b"Fri, 31 Dec 99999 23:59:59 GMT",
    b"-5",
    b"",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
]


@pytest.mark.parametrize("raw", RETRY_AFTER_VALUES)
def test_retry_after_is_written_verbatim(hostile: HostileReceiver, raw: bytes) -> None:
    path = unique("retry-after")
    hostile.configure(path, retry_after=raw)
    with connect(hostile) as sock:
        post(sock, path)
        head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nRetry-After: " + raw + b"\r\n" in head + b"\r\n"


def test_retry_after_status_can_be_overridden(hostile: HostileReceiver) -> None:
    path = unique("retry-after")
    hostile.configure(path, status=429)
    hostile.configure(path, retry_after=b"7")  # a second configure keeps the first's status
    connection = client(hostile)
    connection.request("POST", path, body=b"{}")
    response = connection.getresponse()
    assert (response.status, response.getheader("Retry-After")) == (429, "7")
    connection.close()


def test_nul_body(hostile: HostileReceiver) -> None:
    connection = client(hostile)
    connection.request("POST", unique("nul-body"), body=b"{}")
    response = connection.getresponse()
    assert response.status == 500
    assert b"\x00" in response.read()[:1024]
    connection.close()


def test_bad_utf8_claims_utf8(hostile: HostileReceiver) -> None:
    connection = client(hostile)
    connection.request("POST", unique("bad-utf8"), body=b"{}")
    response = connection.getresponse()
    body = response.read()
    assert (response.status, response.getheader("Content-Type")) == (500, "text/plain; charset=utf-8")
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    connection.close()


def test_huge_headers(hostile: HostileReceiver) -> None:
    path = unique("huge-headers")
    with connect(hostile) as sock:
        post(sock, path)
        head, _ = read_head(sock)
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200 ")
    assert len(lines) > 200
    assert max(len(line) for line in lines) > 65536

    connection = client(hostile)
    connection.request("POST", path, body=b"{}")
    with pytest.raises(http.client.HTTPException):  # a line too long, or too many headers
        connection.getresponse()
    connection.close()


def test_slow_body_sends_one_byte_at_a_time_and_stops_when_the_client_leaves(hostile: HostileReceiver) -> None:
    path = unique("slow-body")
    with connect(hostile) as sock:
        post(sock, path)
        head, first = read_head(sock)
        assert b"\r\nContent-Length: 1000" in head
        if not first:
            first = sock.recv(1000)
        started = time.monotonic()
        second = sock.recv(1000)
        waited = time.monotonic() - started
    assert (len(first), len(second)) == (1, 1)
    assert 0.7 < waited < 2
    wait_for_no_connections(hostile)


def test_hang_never_answers(hostile: HostileReceiver) -> None:
    path = unique("hang")
    connection = client(hostile, timeout=0.5)
    connection.request("POST", path, body=b'{"a": 1}')
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.getresponse()
    assert time.monotonic() - started >= 0.45
    assert hostile.wait_for_calls(path, 1, timeout=5)[0].body == b'{"a": 1}'
    connection.close()
    wait_for_no_connections(hostile)


def test_reset_cuts_the_answer_with_an_rst(hostile: HostileReceiver) -> None:
    with connect(hostile) as sock:
        post(sock, unique("reset"))
        received, error = read_until_closed(sock)
    assert isinstance(error, ConnectionResetError), error
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 1000" in received


def test_set_cookie_names_the_path(hostile: HostileReceiver) -> None:
    path = unique("set-cookie")
    connection = client(hostile)
    connection.request("POST", path, body=b"{}")
    response = connection.getresponse()
    assert (response.status, response.getheader("Set-Cookie")) == (200, f"session={path}; Path=/")
    connection.close()
    assert "Cookie" not in hostile.wait_for_calls(path, 1, timeout=5)[0].headers


def test_redirect_points_at_an_ok_path_nobody_called(hostile: HostileReceiver) -> None:
    suffix = uuid.uuid4().hex
    connection = client(hostile)
    connection.request("POST", f"/redirect/{suffix}", body=b"{}")
    response = connection.getresponse()
    target = f"/ok/redirected-{suffix}"
    assert (response.status, response.getheader("Location")) == (302, hostile.url(target))
    connection.close()
    assert hostile.calls_to(target) == []


def test_slow_ok_delays_each_request_on_its_own_clock(hostile: HostileReceiver) -> None:
    path = unique("slow-ok")
    hostile.configure(path, delay=0.5)
    sockets = [connect(hostile) for _ in range(300)]  # hundreds at once
    started = time.monotonic()
    for sock in sockets:
        post(sock, path)
    heads = [read_head(sock)[0] for sock in sockets]
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()
    assert all(head.startswith(b"HTTP/1.1 200 ") for head in heads)
    assert 0.5 <= elapsed < 2, "the requests waited for each other"
    assert len(hostile.calls_to(path)) == 300


def test_unknown_behaviour_is_a_404(hostile: HostileReceiver) -> None:
    connection = client(hostile)
    connection.request("POST", unique("no-such-thing"), body=b"{}")
    assert connection.getresponse().status == 404
    connection.close()


def test_stop_closes_open_connections_and_ends_its_thread() -> None:
    receiver = HostileReceiver()
    receiver.start()
    path = unique("hang")
    sock = connect(receiver)
    post(sock, path)
    receiver.wait_for_calls(path, 1, timeout=5)
    (thread,) = [t for t in threading.enumerate() if t.name == f"hostile-receiver-{receiver.port}"]
    receiver.stop()
    assert not thread.is_alive()
    with sock:
        left, _ = read_until_closed(sock)  # a FIN or an RST: either says closed
    assert left == b"", "a hung request got an answer"
    with pytest.raises(ConnectionRefusedError):
        connect(receiver, timeout=1)


def wait_for_no_connections(receiver: HostileReceiver) -> None:
    # The module's receiver serves one test at a time, so the count falls to 0 once the client left.
    assert receiver.wait_for_open_connections(0, timeout=5) == 0
