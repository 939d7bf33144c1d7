"""The operations endpoint: /metrics, /healthz, /readyz, and nothing else.

A few GET routes with no body do not justify a web framework in the daemon; an asyncio
protocol serves them on the daemon's event loop (so /healthz also proves the loop is alive).
Binds to 127.0.0.1 unless told otherwise.

Whoever reaches the port is not trusted, and the loop that answers is the one that runs the
jobs, so every connection is bounded: its request head (a request line and headers of at most
MAX_REQUEST_HEAD bytes; GET or HEAD, a body is never read), the time to send it (READ_TIMEOUT)
and to take the answer (WRITE_TIMEOUT). Connections are accepted only while fewer than
max_connections are open (file descriptors are the database connections' too) and at most
requests_per_second: the rest wait in the kernel's listen queue, where they cost the loop
nothing. A request costs the loop one parse and one write, no stream objects; routes answer
from memory, and what takes longer runs elsewhere (see daemon/ops.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 32
REQUESTS_PER_SECOND = 50.0
# connections waiting to be accepted; the kernel refuses more (and clients retry)
BACKLOG = 64
# a connection that has not sent its request this long may be dropped for a new one when all
# slots are taken; a real client (a probe, a scraper) sends it at once
IDLE_GRACE = 0.5


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Awaitable[Response]]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_BAD_REQUEST = Response(400, b"bad request\n")


@dataclass(frozen=True)
class Limits:
    max_connections: int = MAX_CONNECTIONS
    requests_per_second: float = REQUESTS_PER_SECOND
    read_timeout: float = READ_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT


class _RequestRate:
    """A token bucket: up to `rate` connections a second, as a burst after a quiet second."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    async def wait_turn(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self._rate)
            self._tokens, self._at = 1.0, time.monotonic()
        self._tokens -= 1


class OpsServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route], limits: Limits | None = None) -> None:
        self._host = host
        self._port = port
        self.routes = routes
        self.limits = limits or Limits()
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rate = _RequestRate(self.limits.requests_per_second)
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        # connections open now, oldest first (a dict as an ordered set)
        self.connections: dict[_Connection, None] = {}

    @property
    def port(self) -> int:
        port: int = self._sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and listen (OSError when the address is taken); accept in tasks of our own."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        port = self._port
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # with port 0, every address gets the port the first one was given
                sock.bind((address[0], port, *address[2:]))
                port = sock.getsockname()[1]
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        for sock in self._sockets:
            self.run_alongside(self._accept(sock), name="ops-accept")

    def run_alongside(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `work` (what the routes report, e.g. the readiness probe) while the server
        runs; close() cancels it."""
        self._tasks.add(asyncio.get_running_loop().create_task(work, name=name))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()
        for connection in list(self.connections):
            connection.abort()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        """Accept at most requests_per_second: the rest wait in the kernel's listen queue (past
        BACKLOG the kernel turns them away), costing the loop nothing. Past max_connections
        the oldest connection that has not sent its request within IDLE_GRACE is dropped for
        the new one (clients that hold connections open without asking cannot lock the others
        out); otherwise the next waits until a slot frees or a connection outstays the grace."""
        loop = asyncio.get_running_loop()
        while True:
            await self._rate.wait_turn()
            while len(self.connections) >= self.limits.max_connections:
                # oldest first: the first idle one is the first to outstay IDLE_GRACE
                idle = next((c for c in self.connections if c.waiting_for_request), None)
                idle_for = 0.0 if idle is None else loop.time() - idle.opened_at
                if idle is not None and idle_for >= IDLE_GRACE:
                    idle.abort()
                    self.forget(idle)
                    continue
                self._slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_free.wait(), None if idle is None else IDLE_GRACE - idle_for)
            try:
                conn, _peer = await loop.sock_accept(sock)
            except OSError:
                # out of file descriptors, or a connection reset in the queue: not ours to fix
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            try:
                await loop.connect_accepted_socket(lambda: _Connection(self, loop), conn)
            except OSError:
                conn.close()

    def opened(self, connection: _Connection) -> None:
        self.connections[connection] = None

    def forget(self, connection: _Connection) -> None:
        """A connection closed: its slot is free."""
        self.connections.pop(connection, None)
        self._slot_free.set()


class _Connection(asyncio.Protocol):
    """One request, one answer, then closed (`Connection: close`)."""

    def __init__(self, server: OpsServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        # until its request head is in
        self.waiting_for_request = True
        self.opened_at = loop.time()
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self._transport = cast(asyncio.Transport, transport)
        self._server.opened(self)
        self._timer = self._loop.call_later(self._server.limits.read_timeout, self._transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.forget(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # a body, or more after the head: never read
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_REQUEST_HEAD:
                self._answer(_BAD_REQUEST)
            return
        if end + 4 > MAX_REQUEST_HEAD:
            self._answer(_BAD_REQUEST)
            return
        assert self._transport is not None
        self.waiting_for_request = False
        self._transport.pause_reading()
        parts = bytes(self._head[: self._head.find(b"\r\n")]).decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._answer(_BAD_REQUEST)
            return
        method, target, _version = parts
        route = self._server.routes.get(target.split("?", 1)[0])
        if route is None:
            self._answer(Response(404, b"not found\n"))
        elif method not in ("GET", "HEAD"):
            self._answer(Response(405, b"method not allowed\n"))
        else:
            self._answered = True  # from here on the route's task answers
            self._task = self._loop.create_task(self._run(route, head_only=method == "HEAD"))

    async def _run(self, route: Route, *, head_only: bool) -> None:
        try:
            response = await route()
        except Exception:
            response = Response(500, b"internal error\n")
        self._answer(response, head_only=head_only)

    def _answer(self, response: Response, *, head_only: bool = False) -> None:
        self.waiting_for_request = False
        self._answered = True
        transport = self._transport
        if transport is None:
            return  # the client is gone
        if self._timer is not None:
            self._timer.cancel()
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        transport.write(head if head_only else head + response.body)
        transport.close()  # once the answer is out
        # a client that does not read the answer holds its slot for WRITE_TIMEOUT at most
        self._timer = self._loop.call_later(self._server.limits.write_timeout, transport.abort)
