"""A lean webhook receiver on 127.0.0.1, run as its own process: records who arrived when.

asyncio with a hand-written HTTP/1.1 loop (keep-alive, Content-Length bodies only), so that
the receiver costs little CPU beside the service on a 2-core machine and holds 500+ slow
calls open at once. Every POST outside /_bench/ is recorded as (time.time(), message id),
the id taken from the Idempotency-Key header, else from the JSON body's "id". A body larger
than KEEP_BODY_BYTES that comes with an Idempotency-Key is read and dropped chunk by chunk, so
that 200 calls of 1 MiB each (issue 10's large payloads) never sit in the receiver at once.

Control endpoints for the harness:
  POST /_bench/reset   {"delay": 0.2}  forget the calls, set the per-call delay (seconds)
  GET  /_bench/stats   {"count", "inflight", "peak_inflight", "body_bytes"}
  GET  /_bench/calls   {"calls": [[arrived_at, message_id], ...]}
  POST /_bench/null    answers at once, records nothing: the load generator's calibration

Run: python -m bench.receiver --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import requests

KEEP_BODY_BYTES = 64 * 1024
DISCARD_CHUNK_BYTES = 256 * 1024


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self.delay = 0.0
        self.inflight = 0
        self.peak_inflight = 0
        self.body_bytes = 0  # of the recorded calls: a check that large bodies arrived whole

    def reset(self, delay: float) -> None:
        self.calls, self.delay, self.inflight, self.peak_inflight = [], delay, 0, 0
        self.body_bytes = 0


def _message_id(headers: dict[str, str], body: bytes) -> str:
    if "x-message-id" in headers:  # the client's id (Idempotency-Key is the message's delivery id)
        return headers["x-message-id"]
    if "idempotency-key" in headers:
        return headers["idempotency-key"]
    try:
        return str(json.loads(body).get("id", ""))
    except (ValueError, AttributeError):
        return ""


def _response(status: str, body: bytes = b"ok", close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


async def _handle(recorder: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            arrived_at = time.time()  # before the body: the moment the call reached us
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", 0) or 0)
            if length > KEEP_BODY_BYTES and "idempotency-key" in headers:
                await _discard(reader, length)
                body = b""
            else:
                body = await reader.readexactly(length)
            close = headers.get("connection", "").lower() == "close"
            writer.write(await _answer(recorder, method, path, headers, body, arrived_at, close, length))
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return  # the caller hung up; nothing to record
    finally:
        writer.close()


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    """Reads `length` bytes of body and keeps none of them."""
    while length:
        length -= len(await reader.readexactly(min(length, DISCARD_CHUNK_BYTES)))


async def _answer(recorder: Recorder, method: str, path: str, headers: dict[str, str], body: bytes,
                  arrived_at: float, close: bool, length: int) -> bytes:
    if path == "/_bench/null":
        return _response("200 OK", close=close)
    if path == "/_bench/reset":
        recorder.reset(float(json.loads(body or b"{}").get("delay", 0.0)))
        return _response("200 OK", close=close)
    if path == "/_bench/stats":
        stats = {"count": len(recorder.calls), "inflight": recorder.inflight, "peak_inflight": recorder.peak_inflight,
                 "body_bytes": recorder.body_bytes}
        return _response("200 OK", json.dumps(stats).encode(), close)
    if path == "/_bench/calls":
        return _response("200 OK", json.dumps({"calls": recorder.calls}).encode(), close)
    if method != "POST":
        return _response("405 Method Not Allowed", close=close)
    recorder.calls.append((arrived_at, _message_id(headers, body)))
    recorder.body_bytes += length
    if recorder.delay:
        recorder.inflight += 1
        recorder.peak_inflight = max(recorder.peak_inflight, recorder.inflight)
        try:
            await asyncio.sleep(recorder.delay)
        finally:
            recorder.inflight -= 1
    return _response("200 OK", close=close)


async def serve(port: int) -> None:
    recorder = Recorder()
    server = await asyncio.start_server(
        lambda r, w: _handle(recorder, r, w), "127.0.0.1", port, backlog=2048, limit=1 << 20
    )
    async with server:
        await server.serve_forever()


class ReceiverClient:
    """The harness's side: talks to a receiver process through its control endpoints."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = requests.Session()
        self._session.trust_env = False

    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hook/{name}"

    def reset(self, *, delay: float = 0.0) -> None:
        self._session.post(f"{self.base_url}/_bench/reset", json={"delay": delay}, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self._session.get(f"{self.base_url}/_bench/stats", timeout=10).json()

    def calls(self) -> list[tuple[float, str]]:
        return [tuple(call) for call in self._session.get(f"{self.base_url}/_bench/calls", timeout=60).json()["calls"]]

    def answers(self) -> bool:
        try:
            return self._session.get(f"{self.base_url}/_bench/stats", timeout=1).ok
        except requests.RequestException:
            return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
