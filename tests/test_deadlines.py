"""Handler deadlines grouped per tick: they fire late by at most a tick, never early, cancel
only their own task, and leave at most one timer behind once their attempts have ended."""

from __future__ import annotations

import asyncio

import pytest

from jobrunner.daemon.deadlines import TICK, Deadline, Deadlines


async def wait_armed(deadlines: Deadlines, seconds: float, started: asyncio.Event | None = None) -> Deadline:
    deadline = deadlines.arm(seconds)
    try:
        if started is not None:
            started.set()
        await asyncio.Event().wait()
    finally:
        deadlines.disarm(deadline)
    raise AssertionError("unreachable")


async def test_a_deadline_cancels_its_task_no_earlier_than_due_and_at_most_a_tick_late() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    armed_at = loop.time()
    task = asyncio.create_task(wait_armed(deadlines, 0.05))
    with pytest.raises(asyncio.CancelledError):
        await task
    fired_after = loop.time() - armed_at
    assert fired_after >= 0.05
    # a generous bound for a busy machine; the grouping itself adds at most TICK
    assert fired_after < 0.05 + TICK + 0.5
    assert len(deadlines) == 0


def live_timers(loop: asyncio.AbstractEventLoop, before: int) -> int:
    return sum(not timer.cancelled() for timer in loop._scheduled[before:])  # type: ignore[attr-defined]


async def test_deadlines_in_one_tick_share_a_timer_and_one_at_most_outlives_them() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    started = [asyncio.Event() for _ in range(50)]
    tasks = [asyncio.create_task(wait_armed(deadlines, 600, event)) for event in started]
    for event in started:
        await event.wait()
    assert len(deadlines) == 50
    # armed within a few ms of each other: one or two groups, never one timer per job
    assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(deadlines) == 0
    assert live_timers(loop, timers_before) <= 1


async def test_attempts_that_end_in_the_step_they_start_reuse_one_timer() -> None:
    """A handler that never awaits arms and disarms its deadline in one step: the emptied group
    and its timer are kept for the next one rather than made and cancelled per attempt."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    for _ in range(200):
        deadlines.disarm(deadlines.arm(600))
    # the 200 fall in one or two ticks of 10 ms
    assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]
    assert live_timers(loop, timers_before) == 1
    assert len(deadlines) == 0


async def test_the_kept_timer_fires_on_nothing_and_a_later_deadline_still_fires() -> None:
    deadlines = Deadlines()
    deadlines.disarm(deadlines.arm(0.01))  # leaves its emptied group and timer behind
    await asyncio.sleep(0.05)  # past that timer: it fired on an empty group
    assert len(deadlines) == 0
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(wait_armed(deadlines, 0.02))
    assert len(deadlines) == 0


async def test_an_expired_deadline_marks_only_its_own_attempt() -> None:
    deadlines = Deadlines()
    short = asyncio.create_task(wait_armed(deadlines, 0.02))
    started = asyncio.Event()
    long = asyncio.create_task(wait_armed(deadlines, 600, started))
    await started.wait()
    with pytest.raises(asyncio.CancelledError):
        await short
    assert not long.done()
    assert len(deadlines) == 1
    long.cancel()
    await asyncio.gather(long, return_exceptions=True)
    assert len(deadlines) == 0
