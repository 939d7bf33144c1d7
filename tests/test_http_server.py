"""The operations endpoint's HTTP server on a real loopback socket: what it answers, and the
bounds it keeps whatever a client sends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from jobrunner.daemon.ops import MetricsPage
from jobrunner.http_server import MAX_REQUEST_HEAD, Limits, OpsServer, Response
from tests.support import wait_until


async def ok() -> Response:
    return Response(200, b"fine\n")


async def broken() -> Response:
    raise RuntimeError("a bug in a route")


@pytest.fixture
async def server() -> AsyncIterator[OpsServer]:
    limits = Limits(max_connections=4, requests_per_second=1000, read_timeout=0.3, write_timeout=1)
    served = OpsServer("127.0.0.1", 0, {"/ok": ok, "/broken": broken}, limits)
    await served.start()
    try:
        yield served
    finally:
        await served.close()


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_get_and_head_only_on_known_routes(server: OpsServer) -> None:
    answer = await exchange(server.port, b"GET /ok?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nfine\n")
    head = await exchange(server.port, b"HEAD /ok HTTP/1.1\r\n\r\n")
    assert b"Content-Length: 5\r\n" in head and head.endswith(b"\r\n\r\n")
    assert (await exchange(server.port, b"POST /ok HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")).startswith(
        b"HTTP/1.1 405 "
    )
    assert (await exchange(server.port, b"GET /other HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
    assert (await exchange(server.port, b"GET /broken HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /ok\r\n\r\n",  # no version
        b"GET  /ok HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        b"GET /ok HTTP/1.1\r\nX-Big: " + b"a" * MAX_REQUEST_HEAD + b"\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nX-Endless: " + b"a" * (4 * MAX_REQUEST_HEAD),  # no end of head at all
    ],
)
async def test_malformed_or_oversized_requests_get_400(server: OpsServer, request_bytes: bytes) -> None:
    assert (await exchange(server.port, request_bytes)).startswith(b"HTTP/1.1 400 ")


async def test_a_client_that_never_finishes_its_request_is_dropped(server: OpsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ok HTTP/1.1\r\n")  # and nothing more
    started = time.monotonic()
    # a server that kept it (no read timeout) fails here; the bound, 50 read timeouts, only
    # leaves a loaded machine room
    async with asyncio.timeout(50 * 0.3):
        assert await reader.read() == b""  # closed unanswered
    print(f"dropped after {time.monotonic() - started:.2f}s (read timeout 0.3 s)")
    writer.close()


async def test_requests_are_accepted_at_the_configured_rate() -> None:
    rate = 40.0
    served = OpsServer("127.0.0.1", 0, {"/ok": ok}, Limits(requests_per_second=rate))
    await served.start()
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(exchange(served.port, b"GET /ok HTTP/1.1\r\n\r\n") for _ in range(80)))
        elapsed = time.monotonic() - started
    finally:
        await served.close()
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
    # a burst of `rate`, then `rate` a second: the other 40 wait their turn in the listen queue
    assert elapsed >= 0.9 * (80 - rate) / rate


async def test_the_metrics_page_renders_off_the_loop_once_for_concurrent_requests() -> None:
    threads: list[threading.Thread] = []
    release = threading.Event()

    def render() -> bytes:
        threads.append(threading.current_thread())
        release.wait(5)
        return b"page %d" % len(threads)

    page = MetricsPage(render, max_age=60)
    waiting = [asyncio.create_task(page.get()) for _ in range(20)]
    await wait_until(lambda: len(threads) == 1, timeout=5, what="the render to start")
    assert not any(task.done() for task in waiting)  # the loop turns while the thread renders
    release.set()
    assert set(await asyncio.gather(*waiting)) == {b"page 1"}
    assert await page.get() == b"page 1"  # cached within max_age
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
