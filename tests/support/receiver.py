"""A real HTTP receiver on 127.0.0.1 that records every call and its arrival time."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.recorded_calls import RecordedCalls


@dataclass(frozen=True)
class ReceivedCall:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float  # time.time()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class Receiver(RecordedCalls[ReceivedCall]):
    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self._replies: dict[str, deque[Reply]] = defaultdict(deque)
        self._default_replies: dict[str, Reply] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server: its host is text
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answers calls to `path` with `replies` in turn, then with `then` (200 by default)."""
        self._replies[path].extend(replies)
        if then is not None:
            self._default_replies[path] = then

    def _next_reply(self, path: str) -> Reply:
        with self._changed:
            queue = self._replies.get(path)
            if queue:
                return queue.popleft()
            return self._default_replies.get(path, Reply())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived_at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._record(ReceivedCall(self.path, dict(self.headers.items()), body, arrived_at))
                reply = receiver._next_reply(self.path)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (its timeout): that is the point of the test

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler
