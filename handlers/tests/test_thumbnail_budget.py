"""The decode budget holds while a decode outlives the job that asked for it.

A cancelled job (timeout, cancel request, shutdown) stops awaiting its decode, but the thread
decoding the image runs on: the next job's decode must wait for that thread, not for the job.
The decodes run in the daemon's own blocking pool, as process_upload's do (ctx.run_in_thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
import structlog

from jobrunner.daemon.blocking_pools import BlockingPools
from jobrunner_handlers import thumbnails
from jobrunner_handlers.thumbnails import ImageSummary, make_thumbnails_in_budget


async def test_a_cancelled_jobs_decode_keeps_its_slot_until_its_thread_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    release_first = threading.Event()
    first_started = threading.Event()
    lock = threading.Lock()
    running = 0
    most_at_once = 0

    def decode(data: bytes, sizes: Sequence[int], max_pixels: int) -> ImageSummary:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
        try:
            if data == b"first":
                first_started.set()
                release_first.wait(timeout=30)
            return ImageSummary("PNG", 1, 1, {})
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(thumbnails, "make_thumbnails", decode)
    pools = BlockingPools(threads=4, processes=1, log=structlog.get_logger())
    first = asyncio.create_task(make_thumbnails_in_budget(pools.run_in_thread, b"first", [64], 1_000, concurrency=1))
    assert await asyncio.to_thread(first_started.wait, 30)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    second = asyncio.create_task(make_thumbnails_in_budget(pools.run_in_thread, b"second", [64], 1_000, concurrency=1))
    # the second decode may not start while the first thread still decodes
    done, _ = await asyncio.wait({second}, timeout=0.3)
    assert not done, "the second decode ran beside the first one's thread"
    release_first.set()
    summary = await asyncio.wait_for(second, 30)
    assert summary.format == "PNG"
    assert most_at_once == 1
    pools.close()


async def test_a_job_cancelled_while_waiting_for_its_turn_gives_nothing_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting for the budget holds no thread, and a job that stops waiting leaves the budget
    whole: the decode after it runs as soon as the running one ends."""
    release_first = threading.Event()
    first_started = threading.Event()
    decoded: list[bytes] = []

    def decode(data: bytes, sizes: Sequence[int], max_pixels: int) -> ImageSummary:
        if data == b"first":
            first_started.set()
            release_first.wait(timeout=30)
        decoded.append(data)
        return ImageSummary("PNG", 1, 1, [])

    monkeypatch.setattr(thumbnails, "make_thumbnails", decode)
    pools = BlockingPools(threads=1, processes=1, log=structlog.get_logger())
    first = asyncio.create_task(make_thumbnails_in_budget(pools.run_in_thread, b"first", [64], 1_000, concurrency=1))
    assert await asyncio.to_thread(first_started.wait, 30)
    cancelled = asyncio.create_task(
        make_thumbnails_in_budget(pools.run_in_thread, b"cancelled", [64], 1_000, concurrency=1)
    )
    third = asyncio.create_task(make_thumbnails_in_budget(pools.run_in_thread, b"third", [64], 1_000, concurrency=1))
    done, _ = await asyncio.wait({cancelled, third}, timeout=0.1)
    assert not done
    cancelled.cancel()
    release_first.set()
    await asyncio.wait_for(first, 30)
    await asyncio.wait_for(third, 30)
    assert cancelled.cancelled()
    assert decoded == [b"first", b"third"]
    pools.close()
